"""The probe defence: features, artifacts, the classifier, and the pipeline levels, against references."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from consortium.config import RunConfig, load_config
from consortium.defense import DefenseParams
from consortium.model import LoraSpec, attach, layout, load_base
from consortium.probe import (
    FeatureError,
    FeatureSpec,
    Observation,
    Probe,
    ProbeError,
    ProbeRule,
    beta_trust,
    build,
    decide,
    extract,
    feature_dim,
    frozen_verdict,
    grow,
    load,
    load_file,
    publish,
    ramp,
    save,
)
from consortium.probe.trainer import metrics
from consortium.round.pipeline import AggregationRule, candidate_marks, compute_candidate
from consortium.round.records import Commitment, put_vector
from consortium.sim import Simulation
from consortium.store import BlobStore


def _layout(variant: str = "ffa") -> list[tuple[str, tuple[int, ...]]]:
    base, _ = load_base("tiny", seed=0)
    model = attach(base, LoraSpec(variant=variant, r=4, alpha=8.0))  # type: ignore[arg-type]
    return layout(model, LoraSpec(variant=variant, r=4, alpha=8.0))  # type: ignore[arg-type]


LAY = _layout()
D = sum(math.prod(s) for _, s in LAY)


def _synthetic(n: int, seed: int, shift: float = 1.0) -> tuple[torch.Tensor, np.ndarray]:
    """Benign updates scatter around one direction, malicious ones are pushed along another."""
    g = torch.Generator().manual_seed(seed)
    benign_dir = torch.randn(D, generator=torch.Generator().manual_seed(100))
    bad_dir = torch.randn(D, generator=torch.Generator().manual_seed(101))
    y = np.array([i % 2 for i in range(n)])
    x = torch.stack(
        [benign_dir + 2.0 * torch.randn(D, generator=g) + shift * int(label) * bad_dir for label in y]
    )
    return x.float() * 1e-3, y


def test_features_of_a_real_adapter_are_a_unit_direction_plus_log_norms() -> None:
    assert [n for n, _ in LAY] == sorted(n for n, _ in LAY) and all(".lora_B." in n for n, _ in LAY)
    vec = torch.randn(D, generator=torch.Generator().manual_seed(0))
    f = extract(vec, LAY, FeatureSpec())
    assert f.shape == (D + len(LAY),) == (feature_dim(LAY, FeatureSpec()),)
    assert float(f[:D].norm()) == pytest.approx(1.0)
    offsets = np.cumsum([0] + [math.prod(s) for _, s in LAY])
    expect = [math.log10(float(vec[a:b].double().norm())) for a, b in itertools.pairwise(offsets)]
    assert f[D:].tolist() == pytest.approx(expect)
    assert torch.allclose(
        extract(vec * 7, LAY, FeatureSpec())[:D], f[:D], atol=1e-12
    )  # the direction ignores scale
    assert bool(torch.isfinite(extract(torch.zeros(D), LAY, FeatureSpec())).all())  # an empty update
    q = extract(vec, LAY, FeatureSpec(modules=("q_proj",), norm_stats=False))
    assert q.shape == (D // 2,)
    sk = extract(vec, LAY, FeatureSpec(sketch_dim=64, norm_stats=False))
    assert sk.shape == (64,) and abs(float(sk.norm()) - 1) < 0.5
    with pytest.raises(FeatureError, match="selects no tensor"):
        extract(vec, LAY, FeatureSpec(modules=("nope",)))
    with pytest.raises(FeatureError, match="layout needs"):
        extract(vec[:-1], LAY, FeatureSpec())
    full = _layout("lora")
    n_full = sum(math.prod(s) for _, s in full)
    assert extract(torch.ones(n_full), full, FeatureSpec()).shape == (n_full + len(full),)
    n_b = sum(math.prod(s) for n, s in full if ".lora_B." in n)
    assert extract(torch.ones(n_full), full, FeatureSpec(include_a=False, norm_stats=False)).shape == (n_b,)


def _probe(seed: int = 0) -> Probe:
    x, y = _synthetic(60, seed)
    spec = FeatureSpec()
    feats = torch.stack([extract(v, LAY, spec) for v in x]).numpy()
    return build(feats, y, spec, LAY)


def test_probe_separates_separable_updates_and_not_shuffled_labels() -> None:
    probe = _probe()
    x_test, y_test = _synthetic(40, seed=9)
    m = metrics(y_test.tolist(), probe.score(x_test).tolist())
    assert m["auc"] > 0.95 and m["tpr"] >= 0.9 and m["fpr"] <= 0.1
    x, y = _synthetic(60, 0)
    shuffled = np.random.default_rng(0).permutation(y)
    spec = FeatureSpec()
    bad = build(torch.stack([extract(v, LAY, spec) for v in x]).numpy(), shuffled, spec, LAY)
    assert metrics(y_test.tolist(), bad.score(x_test).tolist())["auc"] < 0.75  # it does not pretend


def test_probe_artifact_round_trip_and_tamper(tmp_path: Path) -> None:
    probe = _probe()
    digest, path = save(probe, tmp_path)
    assert path.name == f"{digest}.safetensors" and save(probe, tmp_path)[0] == digest  # deterministic
    again = load_file(path)
    assert again.layout == probe.layout and again.features == probe.features and again.kind == "logreg"
    x, _ = _synthetic(6, 3)
    assert torch.equal(again.score(x), probe.score(x))
    store = BlobStore(tmp_path / "store")
    assert publish(path, store) == digest and torch.equal(load(store, digest).score(x), probe.score(x))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ProbeError, match="tampered or corrupt"):
        load_file(path)
    blob = store.root / digest[:2] / digest
    blob.write_bytes(bytes(data))
    with pytest.raises(ProbeError, match="corrupt"):
        load(store, digest)
    with pytest.raises(ProbeError, match="not found"):
        load_file(tmp_path / "missing.safetensors")
    other = tmp_path / ("0" * 64 + ".safetensors")
    other.write_bytes(b"\0" * 16)
    with pytest.raises(ProbeError, match="hashes to"):
        load_file(other)


def test_ramp_beta_trust_and_evidence_against_hand_worked_values() -> None:
    assert (
        ramp(0.2, 0.3, 0.7) == 1.0
        and ramp(0.9, 0.3, 0.7) == 0.0
        and ramp(0.5, 0.3, 0.7) == pytest.approx(0.5)
    )
    assert ramp(0.4, 0.3, 0.7) == pytest.approx(1 - (0.25**2) * (3 - 0.5))  # smoothstep at t = 1/4
    assert beta_trust([]) == 0.5
    assert beta_trust([(3, 1)], decay=0.5) == pytest.approx((3 + 1) / (3 + 1 + 1 + 1))
    # a = 0.5*3 + 0 = 1.5, b = 0.5*1 + 4 = 4.5 -> (1.5+1) / (1.5+1+4.5+1)
    assert beta_trust([(3, 1), (0, 4)], decay=0.5) == pytest.approx(2.5 / 8)
    assert beta_trust([(3, 1), (0, 4)], decay=1.0) == pytest.approx(4 / 10)
    with pytest.raises(ValueError, match="decay"):
        beta_trust([(1, 0)], decay=1.5)
    assert frozen_verdict([False, False, True, True, True], 3) is True
    assert frozen_verdict([False, True, False, True], 2) is None
    assert frozen_verdict([True, True, False, False, False], 2) is True  # frozen for good
    assert frozen_verdict([False, False], 2) is False and frozen_verdict([True] * 5, 0) is None


def _round(store: BlobStore, updates: torch.Tensor, names: list[str]) -> tuple[str, list[Commitment]]:
    zero = put_vector(store, torch.zeros(D), LAY)
    return zero, [Commitment(n, put_vector(store, u, LAY), 10) for n, u in zip(names, updates, strict=True)]


def test_client_level_weights_in_compute_candidate(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(Path(save(_probe(), tmp_path / "p")[1]).read_bytes())
    x, y = _synthetic(8, seed=5)
    names = [f"org{i}" for i in range(8)]
    g, commits = _round(store, x, names)
    rule = AggregationRule("fedavg", "uniform", params=_params(), probe=ProbeRule(digest))
    a = compute_candidate(store, LAY, g, commits, rule)
    b = compute_candidate(store, LAY, g, commits, rule)
    assert torch.equal(a.vector, b.vector) and torch.equal(a.result.weights, b.result.weights)  # pure
    assert a.result.info == b.result.info and a.flagged == b.flagged
    bad = {n for n, label in zip(names, y, strict=True) if label}
    assert set(a.flagged) == bad
    # a probe's verdict has false positives: on chain it excludes (the proposal bond), never slashes
    assert candidate_marks(a, []) == ([], sorted(bad)) and a.result.info["probe_excluded"] == sorted(bad)
    w = a.result.weights.tolist()
    assert all(w[i] == 0 for i, n in enumerate(names) if n in bad)
    info = a.result.info["probe"]
    kept = [i for i, n in enumerate(names) if n not in bad]
    expect = sum(x[i] * info[names[i]]["weight"] for i in kept) / sum(info[names[i]]["weight"] for i in kept)
    assert torch.allclose(a.vector, expect.float(), atol=1e-7)
    # history: a client with two bad earlier rounds is flagged even when this round's score is benign
    history = {names[kept[0]]: [Observation(0.0), Observation(0.0)]}
    c = compute_candidate(store, LAY, g, commits, rule, probe_history=history)
    assert names[kept[0]] in c.flagged
    # evidence: two earlier 'malicious' verdicts freeze a client as malicious for good (m = 2)
    frozen = ProbeRule(digest, evidence_m=2)
    history = {names[kept[1]]: [Observation(1.0, flagged=True), Observation(1.0, flagged=True)]}
    d = compute_candidate(
        store,
        LAY,
        g,
        commits,
        AggregationRule("fedavg", "uniform", params=_params(), probe=frozen),
        probe_history=history,
    )
    assert names[kept[1]] in d.flagged and d.result.info["probe"][names[kept[1]]]["frozen"] is True
    hist: dict = {}
    grow(hist, a.probe)
    assert sorted(hist) == names and all(len(v) == 1 for v in hist.values())
    with pytest.raises(ProbeError, match="another adapter layout"):
        decide(store, LAY[:1], ProbeRule(digest), x[:, :64], names, {}, {})


def _params() -> DefenseParams:
    return DefenseParams(screen_min_norm=0.0, screen_stale_cosine=2.0)


def test_step_level_counts_snapshots_and_flags_missing_evidence(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(Path(save(_probe(), tmp_path / "p")[1]).read_bytes())
    x, _ = _synthetic(4, seed=7)  # org0, org2 benign; org1, org3 malicious
    names = ["org0", "org1", "org2", "org3"]
    evidence = {
        n: store.put_tensors({"snapshots": torch.stack([x[i], x[i], x[i]])}) for i, n in enumerate(names[:3])
    }
    rule = ProbeRule(digest, level="step", decay=0.5)
    dec = decide(store, LAY, rule, x, names, {}, evidence)
    assert dec.observations["org0"].benign == 3 and dec.observations["org1"].harmful == 3
    assert dec.weights[0] == pytest.approx(beta_trust([(3, 0)], 0.5)) == pytest.approx(0.8)
    assert set(dec.flagged) == {1, 3} and "no step evidence" in dec.flagged[3]
    past = {"org0": [Observation(0.0, 0, 3), Observation(0.0, 0, 3)]}
    later = decide(store, LAY, rule, x, names, past, evidence)
    # a = 0.5*(0.5*0+0)+3 = 3, b = 0.5*(0.5*3+3) = 2.25 -> (3+1) / (3+1+2.25+1) = 4 / 7.25
    assert later.weights[0] == pytest.approx(4 / 7.25)
    with pytest.raises(ProbeError, match="snapshots"):
        decide(store, LAY, rule, x, names, {}, {"org0": store.put_tensors({"other": torch.zeros(2)})})


@pytest.mark.parametrize("level", ["client", "step", "shadow"])
def test_a_run_with_a_probe_scores_every_proposer(tmp_path: Path, level: str) -> None:
    digest, _ = save(_probe(), tmp_path / "probes")
    cfg = load_config(
        preset="smoke",
        overrides=[
            "protocol=central",
            "rounds=2",
            "data.n_train=8",
            "data.n_test=2",
            "eval.isolated_baseline=false",
            'attacks=[{kind="noise", fraction=0.25, std=0.01}]',
            f'probe.artifact="{digest}"',
            f'probe.dir="{tmp_path / "probes"}"',
            f'probe.level="{level}"',
            "probe.step_every=2",
            "probe.flag_below=0.0",  # a synthetic probe: judge the wiring, not its verdicts
        ],
    )
    path = Simulation(cfg, Console(quiet=True)).run(tmp_path / "runs", plots=False)
    report = json.loads((path / "report.json").read_text())
    assert (path / "store" / digest[:2] / digest).is_file()
    for r in report["rounds_detail"]:
        assert sorted(r["info"]["probe"]) == sorted(report["participant_examples"])
    if level != "client":  # the noise attacker trains nothing: it has no step / shadow evidence
        first = report["rounds_detail"][0]
        assert len(first["evidence"]) == cfg.participants - 1
        snaps = BlobStore(path / "store").get_tensors(next(iter(first["evidence"].values())))["snapshots"]
        assert snaps.shape[0] == (cfg.train.local_steps // 2 if level == "step" else 1)
        spent = report["timings"]
        assert spent["probe_evidence"] > 0 and 0 < spent["local_train"] <= spent["federated_train"]
        noisy = next(iter(report["attackers"]))
        assert all(noisy in r["flagged"] for r in report["rounds_detail"])
        assert all("no " in r["info"]["screened"][noisy] for r in report["rounds_detail"])


def test_a_run_is_refused_a_probe_fitted_on_other_evidence(tmp_path: Path) -> None:
    """A probe fitted on 2-step shadow deltas scores nothing else: a run at another level, or with
    another shadow branch, is refused by `consortium check` and by the run before any training, naming
    the setting; the settings it was fitted on pass."""
    from consortium.check import check_config

    probe = _probe()
    probe.info = {"level": "shadow", "evidence": {"shadow_lr": 0.002, "shadow_steps": 2, "step_every": 1}}
    digest, _ = save(probe, tmp_path / "probes")

    def cfg(*extra: str) -> RunConfig:
        where = [f'probe.artifact="{digest}"', f'probe.dir="{tmp_path / "probes"}"', "protocol=central"]
        return load_config(preset="smoke", overrides=[*where, *extra])

    fitted = ('probe.level="shadow"', "probe.shadow_lr=0.002", "probe.shadow_steps=2")
    assert check_config(cfg(*fitted)).digest
    for bad, says in (
        (('probe.level="client"',), "fitted at the shadow level"),
        (('probe.level="step"', "probe.step_every=1"), "fitted at the shadow level"),
        ((*fitted[:2], "probe.shadow_steps=0"), "probe.shadow_steps = 2"),
        ((*fitted[::2], "probe.shadow_lr=0.01"), "probe.shadow_lr = 0.002"),
    ):
        with pytest.raises(ProbeError, match=says):
            check_config(cfg(*bad))
        with pytest.raises(ProbeError, match=says):
            Simulation(cfg(*bad), Console(quiet=True))


def test_the_shadow_branch_trains_with_its_own_lr_and_step_count() -> None:
    from consortium.sim import shadow_params

    cfg = load_config(preset="smoke", overrides=["probe.shadow_steps=2", "probe.shadow_lr=0.5"])
    assert (shadow_params(cfg).steps, shadow_params(cfg).lr) == (2, 0.5)
    plain = load_config(preset="smoke")
    assert shadow_params(plain).steps == plain.train.local_steps
    assert shadow_params(plain).lr == plain.probe.shadow_lr


def test_chain_run_with_a_client_level_probe_passes_the_audit(tmp_path: Path) -> None:
    from consortium.audit import audit_run

    digest, _ = save(_probe(), tmp_path / "probes")
    cfg = load_config(
        preset="smoke",
        overrides=[
            "participants=6",
            "rounds=2",
            "data.n_train=8",
            "data.n_test=2",
            "eval.isolated_baseline=false",
            'attacks=[{kind="noise", fraction=0.2, std=0.01}]',
            f'probe.artifact="{digest}"',
            f'probe.dir="{tmp_path / "probes"}"',
            "probe.flag_below=0.3",
        ],
    )
    path = Simulation(cfg, Console(quiet=True)).run(tmp_path / "runs", plots=False)
    result = audit_run(path)
    assert result.ok, result.problems
    assert result.checked.get("candidates recomputed", 0) >= 1
    blob = path / "store" / digest[:2] / digest  # a tampered probe: the audit cannot recompute the round
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    bad = audit_run(path)
    assert not bad.ok and any("probe" in p for p in bad.problems)


def test_probe_config_errors_name_the_field(tmp_path: Path) -> None:
    from consortium.config import ConfigError

    sha = "a" * 64
    with pytest.raises(ConfigError, match=r"probe: .*needs dir"):
        load_config(preset="smoke", overrides=[f'probe.artifact="{sha}"'])
    with pytest.raises(ConfigError, match=r"probe\.artifact"):
        load_config(preset="smoke", overrides=['probe.artifact="not-a-hash"'])
    with pytest.raises(ConfigError, match="low"):
        load_config(preset="smoke", overrides=["probe.low=0.8", "probe.high=0.7"])
    with pytest.raises(ConfigError, match="protocol = 'central'"):
        load_config(
            preset="smoke", overrides=[f'probe.artifact="{sha}"', 'probe.dir="x"', 'probe.level="step"']
        )
    cfg = load_config(
        preset="smoke", overrides=["protocol=central", f'probe.artifact="{sha}"', f'probe.dir="{tmp_path}"']
    )
    with pytest.raises(ProbeError, match="probe file not found"):
        Simulation(cfg, Console(quiet=True))


def test_an_unused_probe_section_leaves_the_config_digest_unchanged() -> None:
    from consortium.config import config_digest, to_toml_dict

    plain = load_config(preset="smoke")
    assert "probe" not in to_toml_dict(plain)
    tuned = load_config(preset="smoke", overrides=["probe.low=0.2"])
    assert to_toml_dict(tuned)["probe"]["low"] == 0.2 and config_digest(tuned) != config_digest(plain)


def _kind_samples(seed: int) -> list:
    from consortium.probe.dataset import Sample

    x, y = _synthetic(48, seed)
    kinds = ["backdoor", "harmful", "free_rider"]
    return [
        Sample(v, int(lab), kinds[i % 3] if lab else "benign", ["units", "dates"][i % 2], seed, 0)
        for i, (v, lab) in enumerate(zip(x, y, strict=True))
    ]


def test_train_and_evaluate_reports_transfer_and_never_fits_excluded_kinds() -> None:
    from consortium.probe.trainer import train_and_evaluate

    _, report = train_and_evaluate(
        _kind_samples(0), _kind_samples(1), LAY, FeatureSpec(), "logreg", exclude=["free_rider"]
    )
    assert report["in_distribution"]["auc"] > 0.9 and report["heldout_seeds"]["auc"] > 0.9
    assert report["heldout_seeds"]["n_malicious"] == 16  # the free riders are not in it
    assert sorted(report["heldout_attacks"]) == ["backdoor", "free_rider", "harmful"]
    assert sorted(report["heldout_domains"]) == ["dates", "units"]
    assert report["heldout_attacks"]["free_rider"]["n_malicious"] == 8


def test_train_and_evaluate_without_transfer_fits_once_and_gives_the_same_probe() -> None:
    """`transfer=False` (for real models, where each refit costs a fit) skips every refit but the
    final probe and its held-out figures stay those of the full report."""
    import consortium.probe.trainer as trainer
    from consortium.probe.artifact import to_bytes

    fits: list[int] = []
    real = trainer.build

    def counting(*a: object, **kw: object) -> object:
        fits.append(1)
        return real(*a, **kw)

    args = (_kind_samples(0), _kind_samples(1), LAY, FeatureSpec(), "logreg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "build", counting)
        quick, short = trainer.train_and_evaluate(*args, exclude=["free_rider"], transfer=False)
        assert len(fits) == 1
        full, report = trainer.train_and_evaluate(*args, exclude=["free_rider"])
        assert len(fits) > 2
    assert to_bytes(quick) == to_bytes(full)
    assert "heldout_attacks" not in short and "in_distribution" not in short and not short["transfer"]
    assert short["heldout_seeds"] == report["heldout_seeds"] and short["per_attack"] == report["per_attack"]
    assert short["per_attack"]["free_rider"] == report["heldout_attacks"]["free_rider"]
    assert short["n_fit"] == sum(s.attack != "free_rider" for s in args[0]) < 48  # free riders never fitted
