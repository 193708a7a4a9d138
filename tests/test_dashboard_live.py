"""`consortium dashboard --rpc-url --contract --store`: the page of a live network from public records
only, checked against the report of a run made on a real anvil node; an unreachable node is a message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_chain import anvil_node, browser_round_outcomes, has_browser, live_smoke_run

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from consortium.dashboard.app import make_live_app


@pytest.fixture(scope="module")
def anvil() -> Iterator[str]:
    yield from anvil_node()


@pytest.fixture(scope="module")
def run(anvil: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return live_smoke_run(
        anvil,
        tmp_path_factory.mktemp("live"),
        [
            "eval.isolated_baseline=false",
            'strategies=[{kind="no_show", fraction=0.25}]',
        ],
    )


def test_live_network_page_matches_the_report(anvil: str, run: tuple[Path, dict]) -> None:
    path, report = run
    warnings: list[str] = []
    c = TestClient(make_live_app(anvil, report["chain"]["contract"], str(path / "store"), warnings.append))
    s = c.get("/api/state").json()
    assert s["problems"] == [] and warnings == [] and s["in_progress"] is None
    by_address = {p["account"]: p["name"] for p in s["run"]["participants_detail"]}
    name = {org: by_address[addr] for org, addr in report["chain"]["accounts"].items()}
    assert s["run"]["rounds_completed"] == report["rounds_completed"] == len(s["rounds"])
    assert s["run"]["global_adapter"] == report["global_adapter"]
    slashed = 0
    for shown, rec in zip(s["rounds"], report["rounds_detail"], strict=True):
        assert shown["outcome"] == rec["outcome"]
        assert shown["proposers"] == [name[p] for p in rec["proposers"]]
        assert shown["voters"] == [name[v] for v in rec["voters"]]
        assert shown["slashes"] == [s | {"who": name[s["who"]]} for s in rec["slashes"]]
        assert shown["rewards"] == {name[k]: v for k, v in rec["rewards"].items()}
        assert shown["stakes"] == {name[k]: v for k, v in rec["stakes"].items()}
        assert {x["blob"] for x in shown["commitments"]} == {x["blob"] for x in rec["commitments"]}
        assert next(iter(shown["phases"])) == "open" and list(shown["phases"])[-1] == "outcome"
        slashed += len(rec["slashes"])
    assert slashed  # the no-show was slashed: the comparison above covered a slash
    (stakes,) = [x for x in s["charts"] if x["id"] == "stakes"]
    assert all(x["values"][0] == report["chain"]["stake"] for x in stakes["series"])
    blob = report["rounds_detail"][0]["commitments"][0]["blob"]
    b = c.get(f"/api/blob/{blob}").json()
    assert b["present"] and b["hash_ok"] and b["format"] == "safetensors" and b["uses"]
    assert c.get("/api/records/txlog").json()["total"] > 0  # the contract's events
    assert c.get("/files/report.json").status_code == 404  # no run directory in this mode


def test_unreachable_node_is_a_message(tmp_path: Path) -> None:
    warnings: list[str] = []
    c = TestClient(make_live_app("http://127.0.0.1:9", "0x" + "11" * 20, None, warnings.append))
    s = c.get("/api/state").json()
    assert s["run"] is None and len(s["problems"]) == 1
    assert s["problems"][0].startswith("--rpc-url http://127.0.0.1:9 --contract 0x1111")
    assert "unreachable" in s["problems"][0] and warnings == s["problems"]
    assert c.get("/").status_code == 200


@pytest.mark.skipif(not has_browser(), reason="no chromium, chromedriver or selenium")
def test_live_network_page_in_the_browser(anvil: str, run: tuple[Path, dict]) -> None:
    """The same page renders the live network's rounds in headless Chromium."""
    path, report = run
    app = make_live_app(anvil, report["chain"]["contract"], str(path / "store"), lambda _: None)
    outcomes, status = browser_round_outcomes(app, report["rounds_completed"])
    assert outcomes == [d["outcome"] for d in report["rounds_detail"]] and status == "live"
