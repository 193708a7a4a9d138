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


def test_recover_keeps_recorded_lengths_at_a_fraction_of_the_cost(source: Path, tmp_path: Path) -> None:
    path, rec = _removed(source, tmp_path, "--participant", "org0", "--method", "recover")
    assert rec["removal"]["calibration_steps"] == 1  # smoke: 3 local steps x 0.25, at least one
    # round 0 reused, round 1: 3 participants x 1 calibration step, of 3 x 3 steps x 2 rounds
    assert rec["cost"]["local_steps"] == 3 and rec["cost"]["full_retrain_local_steps"] == 18
    report = audit_removal(path)
    assert report.ok, report.problems
    assert report.checked["calibrated lengths checked"] == 6  # 3 participants x 2 rounds


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


def test_a_chain_run_allows_subtract_and_refuses_a_replay(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(runs), *RUN[2:]])
    assert res.exit_code == 0, res.output
    (chain_run,) = runs.iterdir()
    moved = [r for r in _report(chain_run)["rounds_detail"] if r["global_out"] != r["global_in"]]
    who = next(p for p, w in moved[0]["weights"].items() if w > 0)  # a proposer of an accepted round
    res = _remove(chain_run, tmp_path / "no", "--participant", who, "--method", "exact")
    assert res.exit_code == 2 and "removal round type in the contract" in res.output
    assert not (tmp_path / "no").exists()
    path, rec = _removed(chain_run, tmp_path / "out", "--participant", who, "--method", "subtract")
    assert audit_removal(path).ok
    assert rec["removal"]["global_adapter"] != _report(chain_run)["global_adapter"]
