"""bench/robustness.py: per-cell files that resume, intervals over seeds, and the targets' verdicts."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

# bench/ is a folder of scripts, not an installed package: load the script by its path (registered in
# sys.modules so that the worker processes it forks can find its functions)
_SPEC = importlib.util.spec_from_file_location(
    "bench_robustness", Path(__file__).parents[1] / "bench" / "robustness.py"
)
assert _SPEC is not None and _SPEC.loader is not None
rb = sys.modules.setdefault("bench_robustness", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(rb)


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    mean, sd, half = rb.interval([0.0, 1.0])
    assert (mean, sd) == (0.5, pytest.approx(math.sqrt(0.5)))
    assert half == pytest.approx(12.7062047 * math.sqrt(0.5) / math.sqrt(2))
    assert math.isnan(rb.interval([0.3])[2])  # one seed: no interval, not a zero-width one
    assert rb.interval([0.2, 0.2, 0.2])[2] == pytest.approx(0.0, abs=1e-12)


def _cell(asr: list[float], clean: list[float], compliance: list[float] | None = None) -> dict:
    out = {"seeds": len(asr), "seeds_of": 5, "wall_s_values": [100.0] * len(asr), "cpu_s_values": [300.0]}
    for name, vals in (("asr", asr), ("clean", clean), ("compliance", compliance or [])):
        if vals:
            out[name], _, out[f"{name}_ci"] = rb.interval(vals)
            out[f"{name}_values"] = vals
    return out


def _status(lines: list[str], needle: str) -> str:
    return next(line for line in lines if needle in line).rsplit("|", 2)[1].strip()


def test_backdoor_target_is_decided_only_when_the_remaining_seeds_cannot_change_it() -> None:
    fed = rb.cell_key("backdoor", 0.3, "fedavg")
    four = rb.targets({fed: _cell([0.9, 0.85, 1.0, 0.95], [0.3] * 4)}, ["fedavg"])
    assert _status(four, "learns the backdoor") == "**met**"  # 4 of 4: a fifth seed cannot undo it
    two_low = rb.targets({fed: _cell([0.9, 0.1, 0.2], [0.3] * 3)}, ["fedavg"])
    assert _status(two_low, "learns the backdoor") == "**missed**"  # 1 + 2 left < 4
    open_ = rb.targets({fed: _cell([0.9, 0.1, 0.95], [0.3] * 3)}, ["fedavg"])
    assert _status(open_, "learns the backdoor") == "pending (3/5 seeds)"


def test_cell_time_is_judged_on_one_thread_cpu_time_not_on_shared_wall_time() -> None:
    fed = rb.cell_key("backdoor", 0.3, "fedavg")
    verdicts = []
    for cpu in (300.0, 500.0, 800.0):
        cell = _cell([1.0], [0.3]) | {"cpu_s_values": [cpu], "wall_s_values": [5000.0]}
        verdicts.append(_status(rb.targets({fed: cell}, ["fedavg"]), "6 min"))
    assert verdicts == ["**met**", "undecided", "**missed**"]


def test_best_rule_is_judged_against_fedavg_and_the_no_attack_reference() -> None:
    results = {
        rb.cell_key("backdoor", 0.3, "fedavg"): _cell([1.0] * 5, [0.30] * 5),
        rb.cell_key("backdoor", 0.3, "multi_krum"): _cell([0.0] * 5, [0.31] * 5),
        rb.cell_key("backdoor", 0.3, "median"): _cell([0.1] * 5, [0.35] * 5),
        rb.cell_key("none", 0.0, "fedavg"): _cell([0.0] * 5, [0.32] * 5),
    }
    lines = rb.targets(results, ["fedavg", "median", "multi_krum"])
    assert rb.best_rule(results, ["fedavg", "median", "multi_krum"]) == "multi_krum"
    assert _status(lines, "cuts ASR") == "**met**"
    assert _status(lines, "within 2 points") == "**met**"  # 31 vs 32
    results[rb.cell_key("none", 0.0, "fedavg")] = _cell([0.0] * 5, [0.40] * 5)
    assert _status(rb.targets(results, ["fedavg", "multi_krum"]), "within 2 points") == "**missed**"


def _run(tmp_path: Path, *extra: str) -> int:
    return rb.main(
        [
            "--model",
            "smoke",
            "--attacks",
            "backdoor",
            "--fractions",
            "0.3",
            "--defenses",
            "fedavg",
            "--none-defenses",
            "fedavg",
            "--jobs",
            "1",
            "--out",
            str(tmp_path),
            *extra,
        ]
    )


@pytest.fixture
def short_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke grid cut to one round of one step: the bookkeeping is under test, not the outcome."""
    short = rb._merge(rb.SETTINGS["smoke"], {"rounds": 1, "train": {"local_steps": 1}, "data": {"n_test": 2}})
    monkeypatch.setitem(rb.SETTINGS, "smoke", short)


def test_cells_are_kept_one_file_each_and_a_rerun_resumes_without_running_them(
    tmp_path: Path, short_smoke: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run(tmp_path) == 0
    cells = sorted(p.name for p in (tmp_path / "robustness_smoke").iterdir())
    assert cells == ["backdoor_0.3_fedavg_seed0.json", "none_0_fedavg_seed0.json"]
    cell = json.loads((tmp_path / "robustness_smoke" / cells[0]).read_text())
    assert len(cell["attackers"]) == 3 and len(cell["rounds"]) == 1
    assert set(cell["rounds"][0]["weights"]) == {f"org{i}" for i in range(10)}
    assert (tmp_path / "robustness_smoke.md").is_file()
    assert (tmp_path / "robustness_smoke_asr_ci_width.png").is_file()
    # each cell names the code it ran (this checkout's commit) and the tables say which cells ran where
    assert cell["commit"] == rb.git_commit()
    if cell["commit"]:
        md = (tmp_path / "robustness_smoke.md").read_text()
        assert f"| backdoor, 0.3, fedavg | {cell['commit']} (1) |" in md

    def no_training(*_: object) -> None:
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(rb, "run_cell", no_training)
    assert _run(tmp_path) == 0  # everything is on disk: nothing runs


def test_a_cell_run_under_other_settings_is_run_again(tmp_path: Path, short_smoke: None) -> None:
    assert _run(tmp_path, "--render-only") == 2  # nothing finished yet: says so, exit 2
    assert _run(tmp_path) == 0
    path = tmp_path / "robustness_smoke" / "none_0_fedavg_seed0.json"
    cell = json.loads(path.read_text())
    cell["config_digest"] = "0" * 16
    path.write_text(json.dumps(cell))
    kept = (tmp_path / "robustness_smoke" / "backdoor_0.3_fedavg_seed0.json").read_text()
    assert _run(tmp_path) == 0
    assert json.loads(path.read_text())["config_digest"] != "0" * 16  # run again under today's settings
    assert (tmp_path / "robustness_smoke" / "backdoor_0.3_fedavg_seed0.json").read_text() == kept


def _write_fake_cell(
    cell_dir: Path, attack: str, fraction: float, defense: str, seed: int, probes: dict | None = None
) -> None:
    """A finished smoke cell as `run_cell` leaves it (today's config digest), without running it."""
    kind = None if attack == "none" else attack
    cfg = rb.cell_config("smoke", kind, fraction, defense, seed, probes=probes)
    cell = {m: 0.1 * (seed + 1) for m in rb.METRICS} | {
        "asr": 0.5 if defense == "fedavg" else 0.1 * seed,
        "attackers": [],
        "rounds": [],
        "config_digest": rb.config_digest(cfg),
        "seed": seed,
        "key": rb.cell_key(attack, fraction, defense),
    }
    cell_dir.mkdir(parents=True, exist_ok=True)
    rb.write_cell(rb.cell_file(cell_dir, cell["key"], seed), cell)


def test_a_run_of_a_few_cells_renders_every_cell_in_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tables are one file per folder: a run of one rule and one seed once rendered only that
    seed's cells, and no probe cell without --probe, overwriting the full grid's tables. Now its render
    is the full one, columns where they were, probe cells checked against the probe their record names
    (or, for a record older than the path it keeps, shown unchecked rather than dropped)."""
    cells = tmp_path / "robustness_smoke"
    probe = rb.ProbeArg(tmp_path / "elsewhere" / f"{'ab' * 32}.safetensors")  # not on this machine
    rb.record_probes(cells, {"client": probe})
    for seed in (0, 1):
        for defense in ("fedavg", "median", "fedavg+probe"):
            _write_fake_cell(cells, "backdoor", 0.3, defense, seed, {"client": probe})
        _write_fake_cell(cells, "none", 0.0, "fedavg", seed)

    def no_training(*_: object) -> None:
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(rb, "run_cell", no_training)
    full = ("--defenses", "median,fedavg+probe,fedavg", "--seeds", "0,1", "--probe", str(probe.path))
    assert _run(tmp_path, "--render-only", *full) == 0
    md, js = tmp_path / "robustness_smoke.md", tmp_path / "robustness_smoke.json"
    tables = md.read_text(), js.read_text()
    assert "| median | fedavg+probe | fedavg |" in tables[0] and "seeds 0,1," in tables[0]
    assert len(json.loads(tables[1])) == 4
    assert all(r["seeds"] == 2 for r in json.loads(tables[1]).values())

    js.unlink()  # the table stays: it is what a run replaces, and it says where the columns go
    assert _run(tmp_path, "--defenses", "median", "--seeds", "1") == 0  # a run: its cells are all there
    assert (md.read_text(), js.read_text()) == tables
    assert "unchecked" not in capsys.readouterr().out

    record = rb.probe_record(cells, probe.path)  # a record written before records kept the path
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "path"}))
    assert _run(tmp_path, "--defenses", "median", "--seeds", "1", "--render-only") == 0
    assert (md.read_text(), js.read_text()) == tables
    assert "fedavg+probe: shown unchecked" in capsys.readouterr().out


def test_a_variant_grid_keeps_its_cells_apart_from_the_default_grid(
    tmp_path: Path, short_smoke: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """--set changes every cell's config, so in the default folder its cells would be stale there and
    replace the default's; with --tag they go to a folder of their own, and say what they changed."""
    assert _run(tmp_path) == 0
    default = tmp_path / "robustness_smoke" / "backdoor_0.3_fedavg_seed0.json"
    kept = default.read_text()
    # its reference is the default grid's no-attack row: '' asks for none of its own
    variant = ("--set", "server_lr=0.5", "--tag", "slow-server", "--none-defenses", "")
    assert _run(tmp_path, *variant) == 0
    assert default.read_text() == kept
    assert [p.name for p in (tmp_path / "robustness_smoke_slow-server").iterdir()] == [default.name]
    cell = json.loads((tmp_path / "robustness_smoke_slow-server" / default.name).read_text())
    assert cell["overrides"] == ["server_lr=0.5"]
    assert cell["config_digest"] != json.loads(kept)["config_digest"]
    assert "--set server_lr=0.5" in (tmp_path / "robustness_smoke_slow-server.md").read_text()
    capsys.readouterr()
    assert _run(tmp_path, "--render-only", *variant) == 0  # the variant's cells check out as its own
    assert "left aside" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--set", "server_lr=0.5"), "--set needs --tag NAME"),
        (("--set", "server_lr=0.5", "--tag", "../up"), "--tag '../up'"),
        (("--set", "server_lr=-1", "--tag", "neg"), "server_lr"),
        (("--set", "server_lr", "--tag", "bare"), "expected key=value"),
    ],
)
def test_a_bad_variant_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], said: str
) -> None:
    assert _run(tmp_path, *extra) == 2
    assert said in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--defenses", "fedavg,nope") == 2
    assert "unknown attack/defence: nope" in capsys.readouterr().err
    assert _run(tmp_path, "--seeds", "0,x") == 2
    assert not any(tmp_path.iterdir())


def test_the_bench_preset_is_the_ten_organisation_non_iid_test_bed_with_the_speed_settings() -> None:
    from consortium.config import load_config

    cfg = load_config(preset="bench")
    assert (cfg.participants, cfg.protocol, cfg.data.partition) == (10, "central", "domain")
    assert (cfg.lora.layers, cfg.train.prefix_cache, cfg.train.precision) == ("top:15", True, "auto")
    assert (cfg.model.dtype, cfg.train.attention) == ("bfloat16", "eager")
    # the grid's 30% is three whole attackers of ten
    from consortium.attacks import attackers_for

    cell = rb.cell_config("bench", "backdoor", 0.3, "fedavg", 0)
    assert attackers_for(cell.attacks[0].fraction, cell.participants) == 3
    assert load_config(preset="bench") != load_config(preset="demo")


def test_bench_chain_cells_vote_as_the_demo_and_central_cells_keep_their_config() -> None:
    """Chain cells of the non-IID bench preset take the demo's voting tolerances; a central cell's
    config (and so its digest, which names its finished cell) must not move with them."""
    from consortium.config import config_digest, load_config

    chain = rb.cell_config("bench", "backdoor", 0.3, "fedavg", 0, "chain")
    demo = load_config(preset="demo").chain
    assert chain.protocol == "chain"
    voting = (chain.chain.accept_tolerance, chain.chain.flag_loss_margin, chain.chain.base_margin)
    assert voting == (demo.accept_tolerance, demo.flag_loss_margin, demo.base_margin)
    central = rb.cell_config("bench", "backdoor", 0.3, "fedavg", 0)
    assert central.chain == load_config(preset="bench").chain
    assert config_digest(central) != config_digest(chain)
    committee = rb.cell_config("bench", "backdoor", 0.3, "fedavg", 0, "committee")
    assert committee.protocol == "chain" and committee.chain.proposers_vote and not chain.chain.proposers_vote
    assert committee.chain.model_copy(update={"proposers_vote": False}) == chain.chain


def test_two_seeds_of_one_cell_get_their_own_work_directories(tmp_path: Path) -> None:
    """Run directories are named by config name and second: seeds started together once collided."""
    a = rb.cell_workdir(tmp_path, ("bench", "backdoor", 0.3, "fedavg", 0, "central", str(tmp_path)))
    b = rb.cell_workdir(tmp_path, ("bench", "backdoor", 0.3, "fedavg", 1, "central", str(tmp_path)))
    c = rb.cell_workdir(tmp_path, ("bench", None, 0.0, "fedavg", 0, "central", str(tmp_path)))
    assert len({a, b, c}) == 3 and all(p.parent == tmp_path for p in (a, b, c))


def test_rule_plus_probe_cells_run_behind_the_named_probe(
    tmp_path: Path, short_smoke: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`RULE+probe` cells carry the probe's hash and folder in their config (another probe: stale), run
    the rule behind the client-level probe, and are refused without a readable --probe."""
    assert _run(tmp_path, "--defenses", "fedavg+probe") == 2
    assert "needs --probe" in capsys.readouterr().err
    assert _run(tmp_path, "--defenses", "fedavg+probe", "--probe", str(tmp_path / "none.safetensors")) == 2
    assert "probe file not found" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())

    probe = _fitted_probe(tmp_path, "client")
    args = ("--defenses", "multi_krum+probe", "--none-defenses", "multi_krum+probe", "--probe", str(probe))
    assert _run(tmp_path, *args) == 0
    path = tmp_path / "robustness_smoke" / "backdoor_0.3_multi_krum+probe_seed0.json"
    cell = json.loads(path.read_text())
    cfg = rb.cell_config(
        "smoke", "backdoor", 0.3, "multi_krum+probe", 0, probes={"client": rb.ProbeArg(probe)}
    )
    assert (cfg.aggregator, cfg.probe.artifact, cfg.probe.level) == ("multi_krum", probe.stem, "client")
    assert cell["config_digest"] == rb.config_digest(cfg)
    other = tmp_path / "other" / probe.name
    assert (
        rb.config_digest(
            rb.cell_config(
                "smoke", "backdoor", 0.3, "multi_krum+probe", 0, probes={"client": rb.ProbeArg(other)}
            )
        )
        != (cell["config_digest"])
    )
    assert "probe_evidence" in cell["timings"]  # the run scored every update with the probe (a run
    # without one has no such timing)
    assert "multi_krum+probe" in (tmp_path / "robustness_smoke.md").read_text()


def test_step_and_shadow_probe_cells_take_the_level_and_evidence_settings_of_their_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`RULE+shadow_probe` runs behind the --probe file of that level with the shadow branch the probe
    was fitted on (a probe of 1-step shadows scoring 10-step ones would judge what it never saw); a
    level with no probe, a step/shadow artifact without its evidence settings, or two probes of one level
    are refused before anything runs. Client-level cells keep the config (and digest) they had."""
    from consortium.probe.artifact import load_file, save

    client = _fitted_probe(tmp_path, "client")
    shadow = _fitted_probe(tmp_path, "shadow", {"shadow_steps": 2})
    probes = rb.read_probes([client, shadow])
    assert set(probes) == {"client", "shadow"} and dict(probes["shadow"].evidence)["shadow_steps"] == 2
    # the cells folder keeps what their digests need, so a render finds it once the artifacts are gone
    rb.record_probes(tmp_path / "cells", probes)
    for path in (client, shadow):
        path.rename(path.with_suffix(".gone"))
    assert rb.read_probes([client, shadow], tmp_path / "cells") == probes
    with pytest.raises(ValueError, match="--probe"):
        rb.read_probes([client, shadow])  # outside a render there is no stand-in for the file
    with pytest.raises(ValueError, match="--probe"):
        rb.read_probes([client], tmp_path / "elsewhere")
    rb.probe_record(tmp_path / "cells", client).write_text("[1")
    with pytest.raises(ValueError, match=f"--probe {client}: its record .* is unreadable"):
        rb.read_probes([client], tmp_path / "cells")
    for path in (client, shadow):
        path.with_suffix(".gone").rename(path)
    cfg = rb.cell_config("smoke", "backdoor", 0.3, "fedavg+shadow_probe", 0, probes=probes)
    assert (cfg.aggregator, cfg.probe.level, cfg.probe.artifact) == ("fedavg", "shadow", shadow.stem)
    assert cfg.probe.shadow_steps == 2
    with pytest.raises(ValueError, match="step-level probe"):
        rb.cell_config("smoke", "backdoor", 0.3, "fedavg+step_probe", 0, probes=probes)
    assert _run(tmp_path / "grid", "--defenses", "fedavg+step_probe", "--probe", str(client)) == 2
    assert "step-level probe" in capsys.readouterr().err
    assert (
        _run(tmp_path / "grid", "--defenses", "fedavg+probe", "--probe", str(client), "--probe", str(client))
        == 2
    )
    assert "a second client-level probe" in capsys.readouterr().err
    # a shadow probe whose artifact does not say how its shadows were trained
    bare = load_file(shadow)
    bare.info = {k: v for k, v in bare.info.items() if k != "evidence"}
    bare_path = save(bare, tmp_path / "bare")[1]
    assert _run(tmp_path / "grid", "--defenses", "fedavg+shadow_probe", "--probe", str(bare_path)) == 2
    assert "without the evidence settings" in capsys.readouterr().err
    assert not (tmp_path / "grid").exists()
    # the client-level cells already run (issue 23's grid) keep their digest: a client cell's probe
    # table is what it was before step and shadow cells existed, so they are not run again
    kept = json.loads((RESULTS / "robustness_bench" / "backdoor_0.3_fedavg+probe_seed0.json").read_text())
    named = {"client": rb.ProbeArg(BENCH_PROBE)}
    assert (
        rb.config_digest(rb.cell_config("bench", "backdoor", 0.3, "fedavg+probe", 0, probes=named))
        == (kept["config_digest"])
    )


# where issue 23's cells found their client-level probe (the folder is part of their config)
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
BENCH_PROBE = Path(
    "/work/probe_bench/cells/0c80e619074ae9dffc93bdde1ed7a1282f55dfe22b1cde05ef397f799c725b0e.safetensors"
)


STEP_PROBE = BENCH_PROBE.parents[1] / "levels_probes/step" / (
    "dd7e3568e0f7454f576f525667e6cd579c48ec9a08d81da7cc9c33fdf1a00095.safetensors"
)


def test_the_committed_probe_cells_render_without_their_probes() -> None:
    """The 169 MB probes are not in the repository; the level and evidence recorded beside the cells
    give the very digests the probe cells were run under, so the grid re-renders on any machine."""
    probes = rb.read_probes([BENCH_PROBE, STEP_PROBE], RESULTS / "robustness_bench")
    assert dict(probes["step"].evidence) == {"step_every": 1}
    for defense in ("fedavg+probe", "fedavg+step_probe"):
        kept = json.loads((RESULTS / "robustness_bench" / f"backdoor_0.3_{defense}_seed0.json").read_text())
        cfg = rb.cell_config("bench", "backdoor", 0.3, defense, 0, probes=probes)
        assert rb.config_digest(cfg) == kept["config_digest"], defense


def _fitted_probe(tmp_path: Path, level: str, extra: dict | None = None) -> Path:
    """A logreg probe of `level` over one round of the smoke grid's clients (seconds)."""
    from consortium.probe.artifact import save
    from consortium.probe.samples import probe_from_config

    base = rb.cell_config("smoke", None, 0.0, "fedavg", 0)
    fitting = {"train_seeds": (0,), "heldout_seeds": (1,), "train_rounds": 1, "classifier": "logreg"}
    fit = base.model_copy(
        update={"probe": base.probe.model_copy(update={**fitting, "level": level, **(extra or {})})}
    )
    return save(probe_from_config(fit, transfer=False)[0], tmp_path / level)[1]
