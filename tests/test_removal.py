"""`consortium remove` on a smoke central run: each method, its audit, determinism, and bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from consortium.cli import app
from consortium.removal import audit_removal
from consortium.round.records import get_vector
from consortium.store import BlobStore

runner = CliRunner()
RUN = ["--set", "protocol=central", "--set", "eval.isolated_baseline=false", "--set", "data.n_test=2"]


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(out), *RUN])
    assert res.exit_code == 0, res.output
    (run_dir,) = out.iterdir()
    return run_dir


def _remove(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["remove", str(source), "--out", str(out), *args])


def _removed(source: Path, out: Path, *args: str) -> tuple[Path, dict]:
    res = _remove(source, out, *args)
    assert res.exit_code == 0, res.output
    (path,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return path, json.loads((path / "removal.json").read_text())


@pytest.fixture(scope="module")
def exact(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _removed(source, tmp_path_factory.mktemp("exact"), "--participant", "org1", "--method", "exact")


def _report(source: Path) -> dict:
    return json.loads((source / "report.json").read_text())


def test_exact_is_reproducible_audited_and_leaves_the_source_alone(
    source: Path, exact: tuple[Path, dict], tmp_path: Path
) -> None:
    before = _tree_digest(source)
    path, rec = exact
    assert rec["removal"] == {
        "participants": ["org1"],
        "from_round": 0,
        "method": "exact",
        "global_adapter": rec["rounds"][-1]["global_out"],
    }
    assert rec["removal"]["global_adapter"] != _report(source)["global_adapter"]
    for rnd in rec["rounds"]:
        assert sorted(c["participant"] for c in rnd["commitments"]) == ["org0", "org2", "org3"]
    # round 0 starts from the recorded start model: the others' recorded updates are reused untrained
    assert [r["trained"] for r in rec["rounds"]] == [[], ["org0", "org2", "org3"]]
    assert [r["kind"] for r in rec["rounds"]] == ["reused", "exact"] and rec["format"] == 2
    assert rec["cost"]["fraction_of_full_retrain"] == 0.5
    again, rec2 = _removed(source, tmp_path, "--participant", "org1", "--method", "exact")
    assert rec2["removal"]["global_adapter"] == rec["removal"]["global_adapter"]
    blob = "adapter/adapter_model.safetensors"
    assert (again / blob).read_bytes() == (path / blob).read_bytes()
    res = runner.invoke(app, ["audit", str(path)])
    assert res.exit_code == 0, res.output
    assert "replayed candidates recomputed" in res.output
    assert _tree_digest(source) == before


def test_retraining_every_round_gives_the_reused_result_bit_for_bit(
    source: Path, exact: tuple[Path, dict], tmp_path: Path
) -> None:
    from rich.console import Console

    from consortium.removal import remove

    quiet = Console(quiet=True)
    path = remove(source, ["org1"], "exact", tmp_path, console=quiet, reuse=False)
    rec = json.loads((path / "removal.json").read_text())
    assert [len(r["trained"]) for r in rec["rounds"]] == [3, 3]
    assert [r["kind"] for r in rec["rounds"]] == ["exact", "exact"] and audit_removal(path).ok
    assert rec["removal"]["global_adapter"] == exact[1]["removal"]["global_adapter"]


def test_exact_from_a_later_round_keeps_the_earlier_ones(source: Path, tmp_path: Path) -> None:
    path, rec = _removed(source, tmp_path, "--participant", "org2", "--method", "exact", "--from-round", "1")
    original = _report(source)["rounds_detail"]
    assert [r["round"] for r in rec["kept_rounds"]] == [0]
    assert rec["kept_rounds"][0]["global_out"] == original[0]["global_out"]
    assert rec["rounds"][0]["global_in"] == original[1]["global_in"]
    assert rec["rounds"][0]["global_out"] != original[1]["global_out"]
    assert audit_removal(path).ok


def test_subtract_is_the_others_fedavg_of_the_recorded_updates(source: Path, tmp_path: Path) -> None:
    path, rec = _removed(source, tmp_path, "--participant", "org3", "--method", "subtract")
    assert rec["cost"]["local_steps"] == 0
    store, first = BlobStore(source / "store"), _report(source)["rounds_detail"][0]
    layout = [(k, tuple(t.shape)) for k, t in sorted(store.get_tensors(first["global_in"]).items())]
    others = [c["blob"] for c in first["commitments"] if c["participant"] != "org3"]
    expected = get_vector(store, first["global_in"], layout) + torch.stack(
        [get_vector(store, b, layout) for b in others]
    ).mean(0)
    got = get_vector(BlobStore(path / "store"), rec["rounds"][0]["global_out"], layout)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert audit_removal(path).ok


@pytest.mark.parametrize(
    ("replayed", "k", "t", "kinds"),
    [
        (1, 1, 0, "R"),
        (2, 0, 0, "RE"),
        (2, 1, 0, "RX"),
        (6, 1, 0, "REEEEX"),
        (6, 2, 0, "REEEXX"),
        (6, 6, 0, "RXXXXX"),
        (6, 0, 2, "REXEXE"),
        (6, 1, 2, "REXEXX"),
        (7, 2, 3, "REEXEXX"),
        (10, 3, 4, "REEEXEEXXX"),
    ],
)
def test_the_schedule_reuses_the_first_round_estimates_the_middle_and_ends_exact(
    replayed: int, k: int, t: int, kinds: str
) -> None:
    from consortium.removal.schedule import schedule

    names = {"R": "reused", "E": "estimated", "X": "exact"}
    assert schedule(replayed, k, t) == [names[c] for c in kinds]


def test_warmup_rounds_are_exact_right_after_the_reused_first() -> None:
    from consortium.removal.schedule import schedule, schedule_problem

    names = {"R": "reused", "E": "estimated", "X": "exact"}
    assert schedule(10, 2, 0, 1) == [names[c] for c in "RXEEEEEEXX"]
    assert schedule(6, 1, 3, 2) == [names[c] for c in "RXXXEX"]
    assert schedule_problem(4, 2, 0, 2) and schedule_problem(4, 1, 0, -1)  # 1 + 2 + 2 > 4; negative
    assert schedule_problem(4, 1, 0, 2) is None
    assert "--estimate 'magic'" in schedule_problem(4, 1, 0, 0, "magic")


def test_the_default_exact_rounds_are_30_percent_at_least_one() -> None:
    from consortium.removal.schedule import default_exact_rounds, schedule_problem

    assert [default_exact_rounds(n) for n in (1, 2, 3, 4, 6, 7, 10, 13)] == [1, 1, 1, 1, 1, 2, 3, 3]
    assert schedule_problem(3, 4, 0) and schedule_problem(3, -1, 0) and schedule_problem(3, 1, -1)
    assert schedule_problem(3, 3, 0) is None and schedule_problem(3, 0, 5) is None


@pytest.fixture(scope="module")
def long_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of 6 rounds: recover's schedule has middle rounds to estimate."""
    out = tmp_path_factory.mktemp("long")
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(out), *RUN, "--set", "rounds=6"])
    assert res.exit_code == 0, res.output
    (run_dir,) = out.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def recovered(long_source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("recover")
    return _removed(long_source, out, "--participant", "org0", "--method", "recover")


def test_recover_estimates_the_middle_rounds_from_the_recorded_updates(
    long_source: Path, recovered: tuple[Path, dict]
) -> None:
    path, rec = recovered
    assert rec["format"] == 2
    assert rec["removal"]["exact_rounds"] == 1 and rec["removal"]["correct_every"] == 0  # max(1, 0.3 x 6)
    kinds = [r["kind"] for r in rec["rounds"]]
    assert kinds == ["reused", "estimated", "estimated", "estimated", "estimated", "exact"]
    others = ["org1", "org2", "org3"]
    assert [r["trained"] for r in rec["rounds"]] == [[]] * 5 + [others]
    original = {r["round"]: r for r in _report(long_source)["rounds_detail"]}
    store = BlobStore(path / "store")
    for r in rec["rounds"][:5]:  # reused and estimated: each participant's recorded update, byte for byte
        old = {c["participant"]: c for c in original[r["round"]]["commitments"]}
        assert r["commitments"] == [old[c["participant"]] for c in r["commitments"]]
        assert all(c["blob"] in store for c in r["commitments"])
    for r in rec["rounds"][1:]:  # from the new global model: the candidates are not the original's
        assert r["global_in"] != original[r["round"]]["global_in"]
        assert r["global_out"] != original[r["round"]]["global_out"]
    exact_blobs = {c["blob"] for c in rec["rounds"][5]["commitments"]}
    assert not exact_blobs & {c["blob"] for c in original[5]["commitments"]}  # retrained
    # only the exact round trained: 3 participants x 3 steps, of 3 x 3 steps x 6 rounds
    assert rec["cost"]["local_steps"] == 9 and rec["cost"]["full_retrain_local_steps"] == 54
    report = audit_removal(path)
    assert report.ok, report.problems
    assert report.checked["estimated updates matched to their originals"] == 4 * 3
    assert report.checked["round kinds checked"] == 6


def test_recover_with_periodic_correction(long_source: Path, tmp_path: Path) -> None:
    path, rec = _removed(
        long_source, tmp_path, "--participant", "org0", "--method", "recover",
        "--exact-rounds", "2", "--correct-every", "2",
    )  # fmt: skip
    assert (rec["removal"]["exact_rounds"], rec["removal"]["correct_every"]) == (2, 2)
    kinds = [r["kind"] for r in rec["rounds"]]
    assert kinds == ["reused", "estimated", "exact", "estimated", "exact", "exact"]
    assert [len(r["trained"]) for r in rec["rounds"]] == [0, 0, 3, 0, 3, 3]
    assert rec["cost"]["local_steps"] == 3 * 3 * 3
    assert audit_removal(path).ok


def test_recover_with_every_round_exact_is_exact_bit_for_bit(
    long_source: Path, recovered: tuple[Path, dict], tmp_path: Path
) -> None:
    path, rec = _removed(
        long_source, tmp_path / "r", "--participant", "org0", "--method", "recover", "--exact-rounds", "6"
    )
    _, ex = _removed(long_source, tmp_path / "x", "--participant", "org0", "--method", "exact")
    assert [r["kind"] for r in rec["rounds"]] == [r["kind"] for r in ex["rounds"]]
    assert rec["removal"]["global_adapter"] == ex["removal"]["global_adapter"]
    assert rec["removal"]["global_adapter"] != recovered[1]["removal"]["global_adapter"]  # estimates differ
    assert rec["cost"]["local_steps"] == ex["cost"]["local_steps"]
    assert audit_removal(path).ok


@pytest.fixture(scope="module")
def lbfgs(long_source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """recover with FedRecover's estimate: a warm-up exact round gives each participant a pair."""
    out = tmp_path_factory.mktemp("lbfgs")
    return _removed(
        long_source, out, "--participant", "org0", "--method", "recover",
        "--warmup-rounds", "1", "--exact-rounds", "1", "--estimate", "lbfgs",
    )  # fmt: skip


def test_recover_with_lbfgs_estimates_corrects_the_recorded_updates_and_audits(
    long_source: Path, lbfgs: tuple[Path, dict]
) -> None:
    path, rec = lbfgs
    assert (rec["removal"]["warmup_rounds"], rec["removal"]["estimate"]) == (1, "lbfgs")
    assert [r["kind"] for r in rec["rounds"]] == [
        "reused",
        "exact",
        "estimated",
        "estimated",
        "estimated",
        "exact",
    ]
    assert rec["cost"]["local_steps"] == 2 * 3 * 3  # two exact rounds of 3 participants x 3 steps
    original = {r["round"]: r for r in _report(long_source)["rounds_detail"]}
    for r in rec["rounds"][2:5]:  # new blobs: the recorded updates plus their correction
        old = {c["participant"]: c for c in original[r["round"]]["commitments"]}
        for c in r["commitments"]:
            assert c["blob"] != old[c["participant"]]["blob"]
            assert c["n_examples"] == old[c["participant"]]["n_examples"]
    report = audit_removal(path)
    assert report.ok, report.problems
    assert report.checked["estimated updates recomputed"] == 3 * 3


def test_lbfgs_without_an_exact_round_before_is_the_recorded_estimate(
    long_source: Path, recovered: tuple[Path, dict], tmp_path: Path
) -> None:
    path, rec = _removed(
        long_source, tmp_path, "--participant", "org0", "--method", "recover", "--estimate", "lbfgs"
    )
    assert (
        rec["removal"]["global_adapter"] == recovered[1]["removal"]["global_adapter"]
    )  # no pair: no correction
    assert audit_removal(path).ok


def test_audit_catches_an_lbfgs_estimate_replaced_by_the_recorded_update(
    lbfgs: tuple[Path, dict], tmp_path: Path
) -> None:
    """A participant who skips the correction (or sends anything else) in an estimated round."""

    def uncorrected(rec: dict) -> None:
        new = rec["rounds"][3]["commitments"][0]
        (old,) = [
            c for c in rec["original_rounds"][3]["commitments"] if c["participant"] == new["participant"]
        ]
        new["blob"] = old["blob"]

    found = audit_removal(_edited(lbfgs, tmp_path, uncorrected))
    assert not found.ok
    assert any(
        "round 3: org1's estimated update" in p and "not the L-BFGS estimate" in p for p in found.problems
    )


def _edited(recovered: tuple[Path, dict], tmp_path: Path, edit) -> Path:
    path = tmp_path / "edited"
    shutil.copytree(recovered[0], path)
    rec = json.loads((path / "removal.json").read_text())
    edit(rec)
    (path / "removal.json").write_text(json.dumps(rec))
    return path


def test_audit_catches_an_estimated_update_swapped_for_another_participants(
    recovered: tuple[Path, dict], tmp_path: Path
) -> None:
    def swap(rec: dict) -> None:
        a, b = rec["rounds"][2]["commitments"][:2]
        assert rec["rounds"][2]["kind"] == "estimated" and a["participant"] != b["participant"]
        a["blob"], b["blob"] = b["blob"], a["blob"]

    res = runner.invoke(app, ["audit", str(_edited(recovered, tmp_path, swap))])
    assert res.exit_code == 1
    assert "round 2: org1's estimated update" in res.output and "is not its original" in res.output


@pytest.mark.parametrize(("index", "kind"), [(2, "exact"), (5, "estimated"), (0, "estimated")])
def test_audit_catches_an_edited_round_kind(
    recovered: tuple[Path, dict], tmp_path: Path, index: int, kind: str
) -> None:
    def relabel(rec: dict) -> None:
        assert rec["rounds"][index]["kind"] != kind
        rec["rounds"][index]["kind"] = kind

    res = runner.invoke(app, ["audit", str(_edited(recovered, tmp_path, relabel))])
    assert res.exit_code == 1
    assert f"round {index}: kind '{kind}', the schedule says" in res.output


def test_audit_catches_an_edited_schedule(recovered: tuple[Path, dict], tmp_path: Path) -> None:
    def more_exact(rec: dict) -> None:
        rec["removal"]["exact_rounds"] = 2

    found = audit_removal(_edited(recovered, tmp_path, more_exact))
    assert not found.ok and found.problems == ["round 4: kind 'estimated', the schedule says exact"]


def test_audit_names_an_impossible_schedule(recovered: tuple[Path, dict], tmp_path: Path) -> None:
    def too_many(rec: dict) -> None:
        rec["removal"]["exact_rounds"] = 99

    found = audit_removal(_edited(recovered, tmp_path, too_many))
    rem = recovered[1]["removal"]
    said = (f"removal: schedule exact_rounds=99, correct_every={rem['correct_every']}, "
            f"warmup_rounds={rem['warmup_rounds']}, estimate={rem['estimate']}: ")  # fmt: skip
    assert not found.ok and any(p.startswith(said) for p in found.problems), found.problems


def test_audit_refuses_a_format_1_calibration_recover(recovered: tuple[Path, dict], tmp_path: Path) -> None:
    def old(rec: dict) -> None:
        rec["format"] = 1
        rec["removal"]["calibration_steps"] = 1
        del rec["removal"]["exact_rounds"], rec["removal"]["correct_every"]

    res = runner.invoke(app, ["audit", str(_edited(recovered, tmp_path, old))])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "format 1 recover (FedEraser's calibration) is no longer audited" in res.output


def test_audit_catches_an_edited_removal(exact: tuple[Path, dict], tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(exact[0], edited)
    rec = json.loads((edited / "removal.json").read_text())
    # claim the original round-0 update of org0 was its replayed one: the candidate no longer recomputes
    src_store = BlobStore(Path(rec["source"]["run_dir"]) / "store")
    rec_blob = rec["original_rounds"][0]["commitments"][1]["blob"]  # org1's, the removed one's
    assert rec["original_rounds"][0]["commitments"][1]["participant"] == "org1"
    BlobStore(edited / "store").put(src_store.get(rec_blob))
    rec["rounds"][0]["commitments"][0]["blob"] = rec_blob
    (edited / "removal.json").write_text(json.dumps(rec))
    res = runner.invoke(app, ["audit", str(edited)])
    assert res.exit_code == 1
    assert "round 0: candidate recomputes to" in res.output


def test_audit_catches_a_subtraction_of_someone_else(source: Path, tmp_path: Path) -> None:
    path, rec = _removed(source, tmp_path / "out", "--participant", "org3", "--method", "subtract")
    rec["removal"]["participants"] = ["org2"]
    (path / "removal.json").write_text(json.dumps(rec))
    found = audit_removal(path)
    assert not found.ok and "subtraction recomputes to" in found.problems[0]


def _copy(source: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(source, dst)
    return dst


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--participant", "org9", "--method", "exact"], "--participant 'org9': not a participant"),
        (["--participant", "org1", "--method", "exact", "--from-round", "5"], "--from-round 5: no record"),
        (["--participant", "org1", "--method", "forget"], "--method 'forget': expected one of"),
        (
            ["--participant", "org1", "--method", "recover", "--exact-rounds", "-1"],
            "--exact-rounds -1: expected",
        ),
        (
            ["--participant", "org1", "--method", "recover", "--exact-rounds", "3"],
            "--exact-rounds 3: more than the 2 replayed round(s)",
        ),
        (["--participant", "org1", "--method", "recover", "--correct-every", "-2"], "--correct-every -2"),
        (["--participant", "org1", "--method", "recover", "--warmup-rounds", "2"], "--warmup-rounds 2: with"),
        (["--participant", "org1", "--method", "recover", "--estimate", "magic"], "--estimate 'magic'"),
        (
            ["--participant", "org1", "--method", "subtract", "--estimate", "lbfgs"],
            "for --method recover, not",
        ),
        (["--participant", "org1", "--method", "exact", "--exact-rounds", "1"], "for --method recover, not"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(
    source: Path, tmp_path: Path, args: list, message: str
) -> None:
    out = tmp_path / "out"
    res = _remove(source, out, *args)
    assert res.exit_code == 2
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_missing_blob_exits_2_and_writes_nothing(source: Path, tmp_path: Path) -> None:
    run = _copy(source, tmp_path)
    blob = _report(run)["rounds_detail"][1]["commitments"][2]["blob"]
    (run / "store" / blob[:2] / blob).unlink()
    out = tmp_path / "out"
    res = _remove(run, out, "--participant", "org1", "--method", "subtract")
    assert res.exit_code == 2 and f"blob {blob} is missing" in res.output
    assert not out.exists()


def test_a_run_dir_from_another_config_version_exits_2(source: Path, tmp_path: Path) -> None:
    run = _copy(source, tmp_path)
    cfg = run / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[retired_section]\nknob = 1\n")
    out = tmp_path / "out"
    res = _remove(run, out, "--participant", "org1", "--method", "exact")
    assert res.exit_code == 2 and "another config version" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_a_chain_run_allows_subtract_and_refuses_recover(tmp_path: Path) -> None:
    """recover's estimated updates have no place on a chain (exact goes through the contract there:
    tests/test_removal_chain.py)."""
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(runs), *RUN[2:]])
    assert res.exit_code == 0, res.output
    (chain_run,) = runs.iterdir()
    moved = [r for r in _report(chain_run)["rounds_detail"] if r["global_out"] != r["global_in"]]
    who = next(p for p, w in moved[0]["weights"].items() if w > 0)  # a proposer of an accepted round
    res = _remove(chain_run, tmp_path / "no", "--participant", who, "--method", "recover")
    assert res.exit_code == 2 and "--method recover replays central runs only" in res.output
    assert not (tmp_path / "no").exists()
    path, rec = _removed(chain_run, tmp_path / "out", "--participant", who, "--method", "subtract")
    assert audit_removal(path).ok
    assert rec["removal"]["global_adapter"] != _report(chain_run)["global_adapter"]


@pytest.mark.parametrize("level", ["client", "step"])
def test_a_removal_on_a_run_with_a_probe_carries_the_probe_and_audits(tmp_path: Path, level: str) -> None:
    """The pipeline reads the run's probe from the store by hash: the removal's store must hold it."""
    import numpy as np

    from consortium.audit.rounds import layout_of
    from consortium.probe import FeatureSpec, build, feature_dim, save

    bare = _run(tmp_path / "bare", [])
    store = BlobStore(bare / "store")
    lay = layout_of(store, _report(bare)["rounds_detail"][0]["global_in"])
    x = np.random.default_rng(0).normal(size=(20, feature_dim(lay, FeatureSpec())))
    digest, _ = save(build(x, np.array([i % 2 for i in range(20)]), FeatureSpec(), lay), tmp_path / "probes")
    probe = [
        "--set", f'probe.artifact="{digest}"',
        "--set", f'probe.dir="{tmp_path / "probes"}"',
        "--set", f'probe.level="{level}"',
        "--set", "probe.flag_below=0.0",  # a random probe: judge the wiring, not its verdicts
    ]  # fmt: skip
    run = _run(tmp_path / "probed", probe)
    assert (run / "store" / digest[:2] / digest).is_file()
    if level == "step":
        assert _report(run)["rounds_detail"][1]["evidence"]
    path, rec = _removed(run, tmp_path / "out", "--participant", "org0", "--method", "recover")
    assert [r["kind"] for r in rec["rounds"]] == ["reused", "estimated", "exact"]
    assert digest in BlobStore(path / "store")
    if level == "step":  # the estimated round commits the original evidence, the exact one new evidence
        old = _report(run)["rounds_detail"]
        assert rec["rounds"][1]["evidence"] == {p: e for p, e in old[1]["evidence"].items() if p != "org0"}
        assert set(rec["rounds"][2]["evidence"]) == {"org1", "org2", "org3"}
    res = runner.invoke(app, ["audit", str(path)])
    assert res.exit_code == 0, res.output


def _run(out: Path, extra: list[str]) -> Path:
    res = runner.invoke(
        app, ["run", "--preset", "smoke", "--out", str(out), *RUN, "--set", "rounds=3", *extra]
    )
    assert res.exit_code == 0, res.output
    (run_dir,) = out.iterdir()
    return run_dir


def test_a_format_1_exact_record_still_audits_and_an_unknown_format_is_refused(
    exact: tuple[Path, dict], tmp_path: Path
) -> None:
    def old(rec: dict) -> None:
        rec["format"] = 1
        for r in rec["rounds"]:
            del r["kind"]

    found = audit_removal(_edited(exact, tmp_path / "v1", old))
    assert found.ok and "round kinds checked" not in found.checked

    def future(rec: dict) -> None:
        rec["format"] = 3

    res = runner.invoke(app, ["audit", str(_edited(exact, tmp_path / "v3", future))])
    assert res.exit_code == 2 and "format 3, this version reads (1, 2)" in res.output
