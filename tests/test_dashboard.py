"""`consortium dashboard` over HTTP: the JSON it serves against the run's own report, path traversal
refused, nothing written, a missing/malformed/half-written run directory shown as such.

One real smoke run (5 organisations, a backdoor and a noise attacker, a no-show, Multi-Krum, central
DP, 2 rounds) is shared by the module; tests that alter a run directory work on a copy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient
from typer.testing import CliRunner

from consortium.cli import app as cli_app
from consortium.dashboard.app import make_app
from consortium.dashboard.rundir_view import HEAD, PHASES, TXLOG
from consortium.dashboard.state import participant_colours

runner = CliRunner()
RICH = [
    "--set", "rounds=2",
    "--set", "participants=5",
    "--set", "data.n_train=16",
    "--set", "data.n_test=2",
    "--set", "eval.isolated_baseline=false",
    "--set", 'attacks=[{kind="backdoor", fraction=0.2}, {kind="noise", fraction=0.2, std=1.0}]',
    "--set", "aggregator=multi_krum",
    "--set", "defense.f=1",
    "--set", 'strategies=[{kind="no_show", fraction=0.2}]',
    "--set", "privacy.mode=central",
    "--set", "privacy.clip=1.0",
    "--set", "privacy.noise_multiplier=0.5",
    "--set", "privacy.delta=1e-5",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    res = runner.invoke(cli_app, ["run", "--preset", "smoke", "--out", str(out), *RICH])
    assert res.exit_code == 0, res.output
    (path,) = out.iterdir()
    return path


@pytest.fixture
def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run directory inside its own parent, next to a secret the server must not serve."""
    (tmp_path / "secret.txt").write_text("outside the run directory")
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def _client(path: Path, warnings: list[str] | None = None) -> TestClient:
    return TestClient(make_app(path, warn=(warnings if warnings is not None else []).append))


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p.relative_to(root)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_paths_are_the_runs_own() -> None:
    from consortium import rundir

    assert (TXLOG, HEAD) == (rundir.TXLOG, rundir.HEAD)


def test_state_shows_the_reports_numbers(run_dir: Path, report: dict) -> None:
    s = _client(run_dir).get("/api/state").json()
    assert s["problems"] == [] and s["in_progress"] is None
    assert s["run"]["status"] == "complete" and s["run"]["rounds_completed"] == 2
    detail = report["rounds_detail"]
    assert [r["round"] for r in s["rounds"]] == [1, 2]
    for shown, rec in zip(s["rounds"], detail, strict=True):
        assert shown["outcome"] == rec["outcome"]
        assert shown["proposers"] == rec["proposers"] and shown["voters"] == rec["voters"]
        assert shown["gas_total"] == sum(rec["gas"].values())
        assert shown["epsilon"] == rec["privacy"]["epsilon"] > 0
        assert shown["slashes"] == rec["slashes"] and shown["excluded"] == rec["excluded"]
        assert shown["bytes_up"] == rec["bytes"]["upload_total"]
        assert shown["mean_accuracy"] == rec["accuracy"]["mean"]
        assert [c["blob"] for c in shown["commitments"]] == [c["blob"] for c in rec["commitments"]]
    charts = {c["id"]: c for c in s["charts"]}
    assert set(charts) == {"accuracy", "attack", "stakes", "loss", "bytes", "gas", "epsilon"}
    acc = charts["accuracy"]
    assert acc["x"] == [0, 1, 2]
    for series in acc["series"]:
        d = series["label"]
        assert series["values"] == [report["accuracy"]["base"][d]] + [r["accuracy"][d] for r in detail]
    asr = charts["attack"]["series"][0]["values"]
    assert asr == [report["backdoor"]["base"][0]["asr"]] + [r["backdoor"][0]["asr"] for r in detail]
    stakes = {x["label"].split()[0]: x["values"] for x in charts["stakes"]["series"]}
    for name, values in stakes.items():
        assert values == [report["chain"]["stake"]] + [r["stakes"][name] for r in detail]


def test_no_show_is_slashed_and_its_stake_falls(run_dir: Path, report: dict) -> None:
    """The page's stake line of a no-show must go down: the dashboard shows what the chain did."""
    s = _client(run_dir).get("/api/state").json()
    (no_show,) = [p["name"] for p in s["run"]["participants_detail"] if p["strategy"] == "no_show"]
    stakes = next(x for x in s["charts"] if x["id"] == "stakes")["series"]
    line = next(x["values"] for x in stakes if x["label"].startswith(no_show + " "))
    slashed = [x for r in s["rounds"] for x in r["slashes"] if x["who"] == no_show]
    assert slashed and line[-1] < line[0]


def test_colours_follow_strategy() -> None:
    colours = participant_colours(
        {"a": "honest", "b": "honest", "c": "backdoor", "d": "no_show"}, attackers={"c"}
    )

    def rgb(name: str) -> tuple[int, int, int]:
        h = colours[name]
        return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)

    assert colours["a"] != colours["b"]  # one strategy, told apart by shade
    assert all(rgb(n)[2] > rgb(n)[0] for n in "ab")  # honest: blue
    assert rgb("c")[0] > rgb("c")[2]  # attacker: red
    assert len(set(rgb("d"))) == 1  # no-show: grey


def test_timeline_has_every_phase_with_blocks_and_times(run_dir: Path) -> None:
    s = _client(run_dir).get("/api/state").json()
    order = list(dict.fromkeys(PHASES.values()))
    last = 0
    for r in s["rounds"]:
        assert list(r["phases"]) == order
        firsts = [p["first_block"] for p in r["phases"].values()]
        assert firsts == sorted(firsts) and firsts[0] > last
        last = r["phases"]["outcome"]["last_block"]
        assert re.fullmatch(r"\d\d:\d\d:\d\d", r["finished_at"])


def test_unchanged_version_sends_nothing_new(run_dir: Path) -> None:
    c = _client(run_dir)
    v = c.get("/api/state").json()["version"]
    assert c.get("/api/state", params={"since": v}).json() == {"version": v, "unchanged": True}
    assert "rounds" in c.get("/api/state", params={"since": "old"}).json()


def test_blob_described_and_checked(run_dir: Path, report: dict) -> None:
    c = _client(run_dir)
    commit = report["rounds_detail"][0]["commitments"][0]
    b = c.get(f"/api/blob/{commit['blob']}").json()
    assert b["present"] and b["hash_ok"] and b["format"] == "safetensors" and b["tensors"]
    assert f"round 1: update of {commit['participant']}" in b["uses"]
    assert c.get(f"/files/{b['file']}").content == (run_dir / b["file"]).read_bytes()
    assert c.get(f"/api/blob/{'0' * 64}").json()["present"] is False
    assert c.get("/api/blob/%2e%2e%2f%2e%2e%2fetc").status_code == 400
    assert c.get("/api/blob/" + "A" * 64).status_code == 400


def test_a_corrupt_blob_is_shown_as_such(copy: Path, report: dict) -> None:
    blob = report["rounds_detail"][0]["commitments"][0]["blob"]
    path = copy / "store" / blob[:2] / blob
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    assert _client(copy).get(f"/api/blob/{blob}").json()["hash_ok"] is False


def test_files_inside_served_outside_refused(copy: Path) -> None:
    c = _client(copy)
    assert c.get("/files/report.json").content == (copy / "report.json").read_bytes()
    assert c.get("/files/chain/txlog.jsonl").status_code == 200
    (copy / "link").symlink_to(copy.parent / "secret.txt")
    (copy / ".report.json.tmp").write_text("half written")
    for bad in (
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/chain/%2e%2e/%2e%2e/secret.txt",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/link",
        "/files/.report.json.tmp",
        "/files/chain",
        "/files/nothing-here",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
    ):
        r = c.get(bad)
        assert r.status_code == 404, bad
        assert b"outside the run directory" not in r.content and b"root:" not in r.content, bad


def test_serving_writes_nothing(copy: Path, report: dict) -> None:
    before = _snapshot(copy)
    c = _client(copy)
    blob = report["rounds_detail"][0]["commitments"][0]["blob"]
    for url in ("/", "/api/state", "/api/records/rounds", "/api/records/txlog", "/api/records/log",
                f"/api/blob/{blob}", "/files/report.json", "/static/app.js"):  # fmt: skip
        assert c.get(url).status_code == 200, url
    assert _snapshot(copy) == before


def test_records_table(run_dir: Path) -> None:
    c = _client(run_dir)
    lines = (run_dir / TXLOG).read_text().splitlines()
    t = c.get("/api/records/txlog", params={"offset": 3, "limit": 4}).json()
    assert t["total"] == len(lines) and len(t["rows"]) == 4 and t["rows"][0]["line"] == 4
    assert c.get("/api/records/log").json()["rows"][-1]["text"] == "run complete"
    assert c.get("/api/records/secrets").status_code == 404
    assert c.get("/api/records/txlog", params={"limit": 0}).status_code == 400
    assert c.get("/api/records/txlog", params={"offset": "x"}).status_code == 400


def test_half_written_run_shows_what_is_final(copy: Path) -> None:
    """As the writer leaves it during round 2: report.json holds round 1 (written atomically),
    the transaction log runs into round 2's commits and ends in half a line."""
    rep = json.loads((copy / "report.json").read_text())
    rep |= {"status": "running", "rounds_completed": 1, "rounds_detail": rep["rounds_detail"][:1]}
    (copy / "report.json").write_text(json.dumps(rep))
    lines = (copy / TXLOG).read_bytes().splitlines(keepends=True)
    opens = [i for i, line in enumerate(lines) if b'"open_round"' in line]
    commit = next(i for i in range(opens[1], len(lines)) if b'"function":"commit"' in lines[i])
    (copy / TXLOG).write_bytes(b"".join(lines[: commit + 1]) + lines[commit + 1][:40])
    warnings: list[str] = []
    s = _client(copy, warnings).get("/api/state").json()
    assert s["problems"] == [] and warnings == []
    assert [r["round"] for r in s["rounds"]] == [1]
    assert s["in_progress"]["round"] == 2 and s["in_progress"]["phase"] == "commits"
    assert s["in_progress"]["phases"]["commits"]["txs"] == 1


def test_malformed_txlog_line_is_named_and_the_rest_shown(copy: Path) -> None:
    lines = (copy / TXLOG).read_text().splitlines(keepends=True)
    lines[5] = "{not json\n"
    (copy / TXLOG).write_text("".join(lines))
    warnings: list[str] = []
    s = _client(copy, warnings).get("/api/state").json()
    assert s["problems"] == [f"{TXLOG}: line 6 is not JSON; skipped"]
    assert len(warnings) == 1 and "line 6" in warnings[0]
    assert len(s["rounds"]) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "report.json: not written yet"),
        ("{half", "report.json: not JSON"),
        ("[1, 2]", "report.json: not a JSON object"),
        ('{"rounds": 3}', "report.json: no 'rounds_detail' list"),
        (
            '{"rounds_detail": [], "rounds": "x", "rounds_completed": 0}',
            "report.json: 'rounds' is missing or not",
        ),
    ],
)
def test_malformed_run_dir_is_a_message_not_a_crash(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    warnings: list[str] = []
    c = _client(tmp_path, warnings)
    s = c.get("/api/state").json()
    assert s["run"] is None and len(s["problems"]) == 1 and s["problems"][0].startswith(message)
    assert warnings == [f"{tmp_path.resolve()}: {s['problems'][0]}"]
    assert c.get("/").status_code == 200


def test_cli_refuses_a_missing_dir_and_a_taken_port(tmp_path: Path) -> None:
    res = runner.invoke(cli_app, ["dashboard", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such run directory" in res.output
    (tmp_path / "file").write_text("x")
    res = runner.invoke(cli_app, ["dashboard", str(tmp_path / "file")])
    assert res.exit_code == 2 and "not a directory" in res.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        res = runner.invoke(cli_app, ["dashboard", str(tmp_path), "--port", str(s.getsockname()[1])])
    assert res.exit_code == 2 and "cannot serve" in res.output
    assert runner.invoke(cli_app, ["dashboard", str(tmp_path), "--port", "70000"]).exit_code == 2


def test_cli_serves_the_run(run_dir: Path) -> None:
    """The real command in its own process: it prints its URL and serves the run's state there."""
    import requests

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "consortium.cli", "dashboard", str(run_dir), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"at (http://\S+/)", line)
        assert url, line
        s = requests.get(url.group(1) + "api/state", timeout=30).json()
        assert s["run"]["rounds_completed"] == 2
        page = requests.get(url.group(1), timeout=30).text
        assert "static/vendor/uplot/uPlot.iife.min.js" in page and "http" not in page.split("<body>")[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_page_needs_no_network() -> None:
    """Every script and style the page loads is the package's own (no CDN), and ships as package data."""
    import tomllib

    from consortium.dashboard.app import STATIC

    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("static/") and (STATIC.parent / r).is_file() for r in refs), refs
    for name in ("app.js", "style.css"):
        assert not re.search(r"https?://|//cdn", (STATIC / name).read_text()), name
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["consortium"]
    shipped = {p for g in globs for p in (STATIC.parents[1]).glob(g)}
    assert {STATIC.parent / r for r in refs} <= shipped


def _audited(path: Path) -> dict:
    c = TestClient(make_app(path, warn=[].append, audit=True))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        a = c.get("/api/state").json()["audit"]
        if a["state"] in ("done", "error"):
            return a
        time.sleep(0.5)
    raise AssertionError(f"audit still {a['state']}")


def test_audit_verdict_shown_when_asked(copy: Path, report: dict) -> None:
    """The page shows what `consortium audit` finds. Whether this run passes is not the point (its
    coalition can win a round's vote, which the audit names): the page must agree with the audit."""
    from consortium.audit import audit_run

    want = audit_run(copy)
    before = _snapshot(copy)
    a = _audited(copy)
    assert a["state"] == "done" and a["ok"] is want.ok and a["problems"] == list(want.problems), a
    assert _snapshot(copy) == before  # the audit wrote nothing either


def test_audit_of_a_tampered_run_fails_on_the_page(copy: Path, report: dict) -> None:
    blob = report["rounds_detail"][0]["commitments"][0]["blob"]
    path = copy / "store" / blob[:2] / blob
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    a = _audited(copy)
    assert a["state"] == "done" and a["ok"] is False and any(blob[:12] in p for p in a["problems"]), a


def test_run_dashboard_on_a_taken_port_fails_before_the_run(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        res = runner.invoke(
            cli_app,
            ["run", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--dashboard",
             "--dashboard-port", str(s.getsockname()[1])],
        )  # fmt: skip
    assert res.exit_code == 2 and "cannot serve the dashboard" in res.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run started


def test_stopped_run_shows_its_error_and_no_round_in_progress(copy: Path) -> None:
    rep = json.loads((copy / "report.json").read_text())
    rep |= {"status": "failed", "error": "RuntimeError: disk full", "rounds_completed": 1,
            "rounds_detail": rep["rounds_detail"][:1]}  # fmt: skip
    (copy / "report.json").write_text(json.dumps(rep))
    s = _client(copy).get("/api/state").json()
    assert s["run"]["status"] == "failed" and s["run"]["error"] == "RuntimeError: disk full"
    assert s["in_progress"] is None and [r["round"] for r in s["rounds"]] == [1]
