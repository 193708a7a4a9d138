"""`consortium remove --method exact` on a chain run: the contract's removal carried out on the run's own
chain (replayed from its transaction log), then as many rounds as it undid, without the participants.

The result is a chain run directory that `consortium audit` checks like any other (the removal against
the events, every new candidate recomputed); a report that claims another removal, or a new round's
blob changed, fails it. Bad input: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_removal import _tree_digest
from typer.testing import CliRunner

from consortium.chain import replay
from consortium.cli import app
from consortium.rundir import TXLOG
from consortium.store import BlobStore

runner = CliRunner()
RUN = ["--set", "rounds=3", "--set", "participants=7", "--set", "data.n_test=2",
       "--set", "eval.isolated_baseline=false"]  # fmt: skip


def _run(out: Path, *extra: str) -> Path:
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(out), *RUN, *extra])  # protocol chain
    assert res.exit_code == 0, res.output
    (run_dir,) = out.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chain run screened by a random client-level probe (flagging nobody): the probe averages each
    proposer's score over its rounds, so the candidates after the removal depend on the pipeline's memory
    leaving the undone rounds out, and the audit would see it if the replay kept them."""
    import numpy as np

    from consortium.audit.rounds import layout_of
    from consortium.probe import FeatureSpec, build, feature_dim, save

    bare = _run(tmp_path_factory.mktemp("bare"), "--set", "rounds=1")
    lay = layout_of(BlobStore(bare / "store"), _report(bare)["rounds_detail"][0]["global_in"])
    x = np.random.default_rng(0).normal(size=(20, feature_dim(lay, FeatureSpec())))
    probes = tmp_path_factory.mktemp("probes")
    digest, _ = save(build(x, np.array([i % 2 for i in range(20)]), FeatureSpec(), lay), probes)
    weighted = ["probe.low=0.0", "probe.high=1.0", "probe.flag_below=0.0"]  # weight 1 - score, averaged
    settings = [f'probe.artifact="{digest}"', f'probe.dir="{probes}"', *weighted, "chain.n_proposers=3"]
    return _run(tmp_path_factory.mktemp("runs"), *(a for x in settings for a in ("--set", x)))


def _remove(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["remove", str(source), "--out", str(out), "--method", "exact", *args])


def _removing(source: Path) -> list[str]:
    """Two proposers of the second round (removed from it on, round 1 kept: the pipeline's memory of it
    must carry over): the first goes by the contract's removal, the second by its exit."""
    return sorted(_report(source)["rounds_detail"][1]["proposers"])[:2]


def _removed(source: Path, out: Path) -> Path:
    args = ["--from-round", "1", *(a for n in _removing(source) for a in ("--participant", n))]
    res = _remove(source, out, *args)
    assert res.exit_code == 0, res.output
    (path,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return path


@pytest.fixture(scope="module")
def removed(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _removed(source, tmp_path_factory.mktemp("removed"))


def _report(path: Path) -> dict:
    return json.loads((path / "report.json").read_text())


def _audit(path: Path):
    return runner.invoke(app, ["audit", str(path)])


def test_the_contract_removes_them_and_the_rounds_are_played_again_without_them(
    source: Path, removed: Path
) -> None:
    src, rep, gone = _report(source), _report(removed), _removing(source)
    n = len(src["rounds_detail"])
    assert rep["rounds_detail"][:n] == src["rounds_detail"]  # what was played stays on the record
    new = rep["rounds_detail"][n:]
    assert [d["round_id"] for d in new] == [n + 1, n + 2] and rep["rounds_completed"] == n + 2
    for d in new:
        assert not set(gone) & set(
            d["proposers"] + d["voters"] + [c["participant"] for c in d["commitments"]]
        )
    rec = rep["removal"]
    assert (rec["participants"], rec["from_round"], rec["chain_from_round"]) == (gone, 1, 2)
    assert rec["global_adapter"] == rep["global_adapter"] != src["global_adapter"]
    hist = replay(removed / TXLOG, n_accounts=8, seed=0).client.history()
    (rm,) = hist.removals
    accounts = src["chain"]["accounts"]
    assert (rm.target, rm.from_round, rm.after_round) == (accounts[gone[0]], 2, n)
    assert hist.participants[accounts[gone[1]]].exiting and hist.participants[accounts[gone[0]]].removed
    assert hist.round(n + 1).base_hash == hist.round(2).base_hash  # the base round 2 opened on
    assert hist.global_hash.hex() == rep["global_adapter"]


def test_the_removal_audits_and_leaves_the_source_alone(source: Path, removed: Path, tmp_path: Path) -> None:
    before = _tree_digest(source)
    res = _audit(removed)
    assert (
        res.exit_code == 0
        and "1 removals checked" in res.output
        and "1 removal records checked" in res.output
    )
    again = _removed(source, tmp_path / "again")  # bit for bit: the same chain, the same adapter
    assert _report(again)["global_adapter"] == _report(removed)["global_adapter"]
    assert (again / TXLOG).read_bytes() == (removed / TXLOG).read_bytes()
    assert _tree_digest(source) == before


def test_a_report_that_claims_another_removal_fails_the_audit(removed: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(removed, bad)
    rep = _report(bad)
    first, second = rep["removal"]["participants"]
    other = next(n for n in rep["chain"]["accounts"] if n not in (first, second))
    rep["removal"]["participants"] = [other, second]
    (bad / "report.json").write_text(json.dumps(rep))
    res = _audit(bad)
    assert res.exit_code == 1 and f"report.json removal: says removal 1 took {other} out" in res.output


def test_a_changed_blob_of_a_new_round_fails_the_audit(removed: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(removed, bad)
    blob = _report(bad)["rounds_detail"][-1]["commitments"][0]["blob"]
    path = bad / "store" / blob[:2] / blob
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    res = _audit(bad)
    assert res.exit_code == 1 and blob[:12] in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--participant", "org9"], "--participant 'org9': not a participant"),
        (["--participant", "org1", "--from-round", "7"], "--from-round 7: no record"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    source: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    res = _remove(source, tmp_path / "no", *args)
    assert res.exit_code == 2 and message in res.output and not (tmp_path / "no").exists(), res.output


def test_a_removal_is_not_removed_from_again(removed: Path, tmp_path: Path) -> None:
    took_part = _report(removed)["rounds_detail"][0]["proposers"][0]
    res = _remove(removed, tmp_path / "no", "--participant", took_part)
    assert res.exit_code == 2 and "is itself a removal" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "no").exists(), res.output


def test_a_chain_that_does_not_replay_is_refused(source: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(source, bad)
    lines = (bad / TXLOG).read_text().splitlines(keepends=True)
    (bad / TXLOG).write_text("".join(lines[:-3]))  # the last transactions gone
    res = _remove(bad, tmp_path / "no", "--participant", _removing(source)[0])
    assert res.exit_code == 2 and "does not replay" in res.output and not (tmp_path / "no").exists()


def test_the_dashboard_shows_the_removal_and_strikes_the_undone_rounds(source: Path, removed: Path) -> None:
    pytest.importorskip("starlette")
    from consortium.dashboard.state import build_state

    s = build_state(removed)
    n = len(_report(source)["rounds_detail"])
    assert s["problems"] == []
    (m,) = s["removals"]
    assert (m["id"], m["status"], m["participants"], m["rounds_undone"]) == (
        1,
        "executed",
        _removing(source),
        [2, 3],
    )
    assert [r["undone_by"] for r in s["rounds"]] == [None, 1, 1] + [None] * (len(s["rounds"]) - n)
