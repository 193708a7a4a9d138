"""`consortium dashboard` on a directory written by `consortium remove`: the page shows the removal's own
record (who, from which round, the method, each replayed round's kind, the cost), the audit it passes,
and a damaged record as a message rather than a crash. The live network's removals: tests/chain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from live_chain import browser_page, has_browser
from starlette.testclient import TestClient
from typer.testing import CliRunner

from consortium.cli import app as cli_app
from consortium.dashboard.app import make_app
from consortium.removal.schedule import PLAN_KEYS
from consortium.removal.verify import audit_removal

runner = CliRunner()
RUN = ["--set", "protocol=central", "--set", "eval.isolated_baseline=false", "--set", "data.n_test=2",
       "--set", "rounds=3"]  # fmt: skip
KINDS = ["reused", "estimated", "exact"]  # recover over 3 rounds with one exact round (schedule "REX")


@pytest.fixture(scope="module")
def removed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """(the removal directory, its removal.json, the source run's report)."""
    runs = tmp_path_factory.mktemp("runs")
    res = runner.invoke(cli_app, ["run", "--preset", "smoke", "--out", str(runs), *RUN])
    assert res.exit_code == 0, res.output
    (source,) = runs.iterdir()
    out = tmp_path_factory.mktemp("removed")
    args = ["remove", str(source), "--out", str(out), "--participant", "org1", "--method", "recover",
            "--exact-rounds", "1"]  # fmt: skip
    res = runner.invoke(cli_app, args)
    assert res.exit_code == 0, res.output
    (path,) = out.iterdir()
    record = json.loads((path / "removal.json").read_text())
    return path, record, json.loads((source / "report.json").read_text())


def _state(path: Path, audit: bool = False) -> dict:
    return TestClient(make_app(path, warn=lambda _: None, audit=audit)).get("/api/state").json()


def test_the_page_shows_the_removal_record(removed: tuple[Path, dict, dict]) -> None:
    path, rec, source = removed
    s = _state(path)
    assert s["problems"] == [] and s["run"]["status"] == "complete"
    assert s["run"]["global_adapter"] == rec["removal"]["global_adapter"] != source["global_adapter"]
    (m,) = s["removals"]
    assert (m["participants"], m["from_round"], m["method"]) == (["org1"], 1, "recover")
    assert m["source_global_adapter"] == source["global_adapter"]
    schedule = {"exact_rounds": 1, "correct_every": 0, "warmup_rounds": 0, "estimate": "recorded"}
    assert m["schedule"] == schedule and tuple(schedule) == PLAN_KEYS  # the page's copy of the keys is whole
    assert m["local_steps"] == rec["cost"]["local_steps"] > 0 and m["rounds_undone"] == [1, 2, 3]
    assert [r["outcome"] for r in s["rounds"]] == KINDS == [r["kind"] for r in rec["rounds"]]
    for shown, replayed, original in zip(s["rounds"], rec["rounds"], source["rounds_detail"], strict=True):
        assert "org1" not in shown["proposers"] and shown["weights"] == replayed["weights"]
        assert (shown["global_in"], shown["global_out"]) == (replayed["global_in"], replayed["global_out"])
        assert shown["original_global_out"] == original["global_out"]
    assert {p["name"]: p["strategy"] for p in s["run"]["participants_detail"]}["org1"] == "removed"
    c = TestClient(make_app(path, warn=lambda _: None))
    assert c.get("/api/records/rounds").json()["total"] == len(rec["rounds"])
    blob = rec["removal"]["global_adapter"]
    assert c.get(f"/api/blob/{blob}").json()["hash_ok"] is True  # the removal's store is served


def test_the_page_runs_the_removal_audit(removed: tuple[Path, dict, dict], tmp_path: Path) -> None:
    """`--audit` on a removal directory runs the removal audit (not the run audit, which would find no
    report): it passes on the directory and fails on one whose record names another participant."""
    from test_dashboard import _audited

    path, rec, _ = removed
    a = _audited(path)
    assert a["state"] == "done" and a["ok"] is True and audit_removal(path).ok, a
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    other = rec | {"removal": rec["removal"] | {"participants": ["org2"]}}
    (bad / "removal.json").write_text(json.dumps(other))
    a = _audited(bad)
    assert a["state"] == "done" and a["ok"] is False and a["problems"], a


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "removal.json: not JSON"),
        ('{"format": 2}', "removal.json: no 'removal' object"),
        ('{"removal": {"participants": ["org1"], "from_round": 0}, "rounds": [{"kind": "exact"}]}',
         "removal.json: 'rounds' holds a round record without an integer 'round'"),
        ('{"removal": {"participants": ["org1"], "from_round": 0}, "rounds": [{"round": 0, "weights": 3}]}',
         "removal.json: malformed (TypeError"),
        ('{"removal": {"participants": [1, "a"], "from_round": 0}, "rounds": [{"round": 0}]}',
         "removal.json: malformed (TypeError"),
    ],
)  # fmt: skip
def test_a_damaged_removal_record_is_a_message(
    removed: tuple[Path, dict, dict], tmp_path: Path, text: str, problem: str
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(removed[0], bad)
    (bad / "removal.json").write_text(text)
    s = _state(bad)
    assert s["run"] is None and s["removals"] == [] and any(p.startswith(problem) for p in s["problems"]), s
    assert not any("report.json" in p for p in s["problems"])  # a removal directory has none to miss


@pytest.mark.skipif(not has_browser(), reason="no chromium, chromedriver or selenium")
def test_the_removal_page_in_the_browser(removed: tuple[Path, dict, dict]) -> None:
    path, rec, _ = removed
    page = browser_page(make_app(path, warn=lambda _: None), len(rec["rounds"]))
    assert page["outcomes"] == KINDS and page["status"] == "complete"
    assert page["removals_shown"] and len(page["removals"]) == 1
    row = page["removals"][0]
    assert row[:4] == ["this run", "org1", "1", "recover (K 1, T 0)"] and row[6] == "1, 2, 3"
