"""Config: presets, TOML, dotted overrides, and one-line errors that name the field."""

from pathlib import Path

import pytest

from consortium.config import ConfigError, load_config

# `make demo`'s config today (issue 21, 2026-12-03: bf16 base, eager attention, 8 rounds x 10 steps)
DEMO_DIGEST = "73fd94b59be2ed3b"


def test_presets_load_and_differ() -> None:
    smoke, demo = load_config(preset="smoke"), load_config(preset="demo")
    assert smoke.model.name == "tiny" and smoke.participants == 4 and smoke.rounds == 2
    assert demo.model.name == "smollm2" and demo.participants >= 4
    assert load_config() == demo  # demo is the default


def test_toml_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('rounds = 5\n[train]\nlr = 0.01\n[lora]\nvariant = "lora"\n')
    cfg = load_config(f, "smoke", ["rounds=7", "train.batch_size=3", 'lora.target_modules=["q_proj"]'])
    assert cfg.rounds == 7 and cfg.train.lr == 0.01 and cfg.train.batch_size == 3
    assert cfg.lora.variant == "lora" and cfg.lora.target_modules == ("q_proj",)
    assert cfg.model.name == "tiny"  # untouched preset value survives


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("rounds=-1", "rounds: Input should be greater than or equal to 1 (got -1)"),
        ("bogus=1", "bogus: unknown key"),
        ("train.nope=1", "train.nope: unknown key"),
        ("train.lr=abc", "train.lr: Input should be a valid number"),
        ("lora.variant=qlora", "lora.variant: Input should be 'lora', 'ffa', 'flora' or 'fedsb'"),
        ("aggregator=nope", "aggregator: unknown aggregator 'nope'; known: bulyan, fedavg, flame"),
        ('data.jsonl=["/no/such/file.jsonl"]', "data.jsonl.0: Path does not point to a file"),
        ("rounds", "--set 'rounds': expected key=value"),
        (
            'attacks=[{kind="backdoor", fraction=2}]',
            "attacks.0.backdoor: fraction: expected a number in [0, 1]",
        ),
        ('attacks=[{kind="noise", std=-1}]', "attacks.0.noise: std: expected a number > 0 (got -1.0)"),
        ('attacks=[{kind="scale", bogus=1}]', "attacks.0.scale.bogus: unknown key"),
        ('attacks=[{kind="teleport"}]', "attacks.0: Input tag 'teleport' found using 'kind' does not match"),
        (
            'attacks=[{kind="noise", fraction=0.8}, {kind="sybil", fraction=0.5}]',
            "config: the attacks need 5",
        ),
        ("defense.trim_ratio=0.6", "defense: defense.trim_ratio must be a number in [0, 0.5), got 0.6"),
        ("defense.nope=1", "defense.nope: unknown key"),
    ],
)
def test_bad_values_name_the_field(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(preset="smoke", overrides=[override])
    assert str(e.value).startswith(expected)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config(preset="huge")


def test_attacks_and_defense_from_overrides() -> None:
    cfg = load_config(
        preset="smoke",
        overrides=[
            'attacks=[{kind="backdoor", fraction=0.25, trigger="zz"}, {kind="free_rider", mode="random"}]',
            "aggregator=multi_krum",
            "defense.f=1",
        ],
    )
    assert [a.kind for a in cfg.attacks] == ["backdoor", "free_rider"]
    assert cfg.attacks[0].backdoor == ("zz", "ACCESS GRANTED") and cfg.attacks[1].mode == "random"
    assert cfg.aggregator == "multi_krum" and cfg.defense.f == 1


def test_resolved_config_round_trips_through_toml(tmp_path: Path) -> None:
    import tomli_w

    from consortium.config import to_toml_dict

    cfg = load_config(preset="smoke", overrides=['attacks=[{kind="scale"}]', "aggregator=krum"])
    assert cfg.defense.f is None and cfg.attacks[0].factor is None  # None has no TOML form
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(to_toml_dict(cfg)))
    assert load_config(path, preset="smoke") == cfg


# keys whose default is not their neutral value: the proposal bond (issue 22 item 7) changed what a run
# computes, and its contract's parameters changed with it, so runs made before it are not audited by
# this version; a config naming `chain.proposal_bond_bps = 0` keeps its older digest. The presets'
# aggregation version 3 (issue 24) is a new default of new runs; a config without the key is version 1
# and keeps its digest
NEW_DEFAULTS = ("chain.proposal_bond_bps", "defense.aggregation_version")


def test_the_demo_digest_is_pinned_and_keys_added_later_leave_older_configs_auditable() -> None:
    """Every chain commitment names the config digest; a new key that changes it breaks the audit of
    every run directory written before it (as `train.packing` & co. did). Add it to DIGEST_NEUTRAL."""
    from consortium.config import DIGEST_NEUTRAL, RunConfig, config_digest, to_toml_dict

    def demo_before_speed_settings(overrides: list[str]) -> RunConfig:
        """The demo preset before 2026-12-03's bf16 base, eager attention and 8 x 10 steps (and before
        the proposal bond), with `overrides`."""
        before = ["model.dtype=float32", "rounds=5", "train.local_steps=6", "chain.proposal_bond_bps=0"]
        before += ["defense.aggregation_version=1", "lora.layers=all", "train.prefix_cache=false"]
        before += overrides
        data = to_toml_dict(load_config(preset="demo", overrides=before))
        data["train"].pop("attention")
        return RunConfig.model_validate(data)

    # what `make demo` committed on 2026-11-23: the preset before issue 21's re-tune
    # (then the first 64 bits of the digest: issue 22 made it 256)
    retune = ["train.local_steps=3", "train.precision=fp32", "chain.accept_tolerance=0.02"]
    retune.append("chain.flag_loss_margin=0.1")
    demo = demo_before_speed_settings(retune)
    assert config_digest(demo).startswith("db3f16c9e2f36a56") and len(config_digest(demo)) == 64
    # issue 21's first re-tune, then today's preset (both before the proposal bond of issue 22 item 7)
    assert config_digest(demo_before_speed_settings([])).startswith("1f322f9a07d9d99e")
    # the preset of 8 rounds x 10 steps on all layers (before issue 21's top-15 re-tune)
    all_layers = ["rounds=8", "train.local_steps=10", "lora.layers=all", "train.prefix_cache=false"]
    unbonded = load_config(
        preset="demo", overrides=[*all_layers, "chain.proposal_bond_bps=0", "defense.aggregation_version=1"]
    )
    assert config_digest(unbonded).startswith(DEMO_DIGEST)
    assert not config_digest(load_config(preset="demo")).startswith(DEMO_DIGEST)  # the bond is a new default
    bonded_v1 = config_digest(load_config(preset="demo", overrides=["defense.aggregation_version=1"]))
    assert bonded_v1 != config_digest(load_config(preset="demo"))  # so is aggregation version 3
    older = to_toml_dict(demo)  # the config.toml of a run made before the neutral keys existed
    for dotted in DIGEST_NEUTRAL:
        if dotted in NEW_DEFAULTS:  # deliberate protocol changes: an older config.toml names no value
            continue
        section, key = dotted.split(".")
        older.get(section, {}).pop(key, None)
    assert config_digest(RunConfig.model_validate(older)) == config_digest(demo)
    packed = config_digest(demo_before_speed_settings([*retune, "train.packing=true"]))
    assert not packed.startswith("db3f16c9e2f36a56")


def test_a_commitment_naming_the_old_64_bit_digest_still_matches() -> None:
    from consortium.config import config_digest, digest_matches

    d = config_digest(load_config(preset="demo"))
    assert digest_matches(d, d) and digest_matches(d[:16], d)
    assert not digest_matches(d[:15], d) and not digest_matches("0" * 64, d)


def test_voting_proposers_beyond_the_contracts_seats_are_refused_up_front() -> None:
    """20 proposers + 20 voters would make 40 seats: the contract's deployment would revert, after the
    model was built; the config names the limit first."""
    over = ["participants=44", "chain.n_proposers=20", "chain.n_voters=20", "chain.proposers_vote=true"]
    with pytest.raises(ConfigError, match=r"chain\.proposers_vote: 20 proposers \+ 20 voters make 40"):
        load_config(preset="smoke", overrides=over)
    assert not load_config(preset="smoke", overrides=over[:-1]).chain.proposers_vote
