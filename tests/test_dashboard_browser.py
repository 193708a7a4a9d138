"""The dashboard in a real browser: headless Chromium (Selenium) on `consortium run --dashboard`.

While a 3-round smoke run goes, the open page must show a new round without being reloaded and mark
the round in progress; once the run is over, the numbers on the page must be report.json's."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (the dev extra has it)"
)
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no chromium/chromedriver: `make install`, or apt-get install chromium chromium-driver",
)
ROUNDS = 3
OBSERVE = """const p = document.getElementById("pending-row");
return [Number(document.body.dataset.rounds || 0), p ? Number(p.dataset.round) : null,
        document.getElementById("status").textContent];"""
RUN = [
    "--set", f"rounds={ROUNDS}",
    "--set", "data.n_train=16",
    "--set", "data.n_test=2",
    "--set", "eval.isolated_baseline=false",
    "--set", 'strategies=[{kind="no_show", fraction=0.25}]',
]  # fmt: skip


def browser() -> Any:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1800"):  # fmt: skip
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(DRIVER)))


@pytest.fixture(scope="module")
def watcher() -> Iterator[Any]:
    """The live test's browser, started before the run: once, in the full suite, Chromium's start-up
    outlasted the whole 3-round smoke run, and the page opened on a finished run."""
    drv = browser()
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, watcher: Any) -> Iterator[tuple[Path, str]]:
    """`consortium run --dashboard --dashboard-port 0` in its own process: (run dir, dashboard URL).
    It starts once `watcher`, the browser, is up."""
    out = tmp_path_factory.mktemp("runs")
    cmd = [sys.executable, "-m", "consortium.cli", "run", "--preset", "smoke", "--out", str(out), *RUN,
           "--dashboard", "--dashboard-port", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True).start()
    try:
        found = None
        deadline = time.monotonic() + 300
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            found = re.search(r"dashboard of (\S+) at (http://\S+/)", seen[-1])
        assert found, "".join(seen)[-3000:]
        yield Path(found.group(1)), found.group(2)
    finally:
        proc.send_signal(signal.SIGINT)  # the run lingers, serving the page, until Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _report(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report.json").read_text())


def test_live_run_shows_a_new_round_without_reload(live: tuple[Path, str], watcher: Any) -> None:
    run_dir, url = live
    drv = watcher
    drv.get(url)
    WebDriverWait(drv, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-version"))
    drv.execute_script("window.__sameDocument = 'yes'")
    seen: list[tuple[int, int | None, str]] = []  # (rounds shown, round marked in progress, status)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        shown, marked, status = drv.execute_script(OBSERVE)  # one read: the DOM changes under us
        seen.append((shown, marked, status))
        if status == "complete":
            break
        time.sleep(0.25)
    assert drv.execute_script("return window.__sameDocument") == "yes"  # never reloaded
    counts = [s[0] for s in seen]
    assert seen[-1][2] == "complete" and counts[-1] == ROUNDS, seen[-5:]
    assert len(set(counts)) >= 2, "no round appeared while the page was open"
    assert counts == sorted(counts)
    marks = [(n, m) for n, m, status in seen if m is not None]
    assert marks and all(m == n + 1 for n, m in marks)  # the round in progress is the next one
    assert _report(run_dir)["rounds_completed"] == ROUNDS


def test_finished_run_page_shows_the_reports_numbers(live: tuple[Path, str]) -> None:
    run_dir, url = live
    deadline = time.monotonic() + 400
    while _report(run_dir)["status"] != "complete" and time.monotonic() < deadline:
        time.sleep(1)
    report = _report(run_dir)
    assert report["status"] == "complete"
    drv = browser()
    try:
        drv.get(url)
        WebDriverWait(drv, 60).until(lambda d: d.execute_script(OBSERVE)[0] == ROUNDS)
        assert drv.find_element(By.ID, "status").text == "complete"
        assert not drv.find_elements(By.ID, "pending-row")

        def check_page() -> None:
            def cell(rnd: int, field: str) -> str:
                return drv.find_element(
                    By.CSS_SELECTOR, f'tr.round-row[data-round="{rnd}"] td[data-field="{field}"]'
                ).text

            for d in report["rounds_detail"]:
                n = d["round"] + 1
                assert cell(n, "outcome") == d["outcome"]
                assert cell(n, "mean_accuracy") == f"{d['accuracy']['mean']:.3f}"
                assert cell(n, "gas") == str(sum(d["gas"].values()))
                assert cell(n, "bytes_up") == str(d["bytes"]["upload_total"])
                assert cell(n, "proposers") == ", ".join(d["proposers"])
                for s in d["slashes"]:
                    assert f"{s['who']} {s['eth']:.3f} ({s['reason']})" in cell(n, "slashes")
            final = report["rounds_detail"][-1]["stakes"]
            for name, stake in final.items():
                sel = f'tr[data-participant="{name}"] td[data-field="stake"]'
                assert drv.find_element(By.CSS_SELECTOR, sel).text == f"{stake:.3f}"
            for model, row in report["accuracy"].items():
                for domain, value in row.items():
                    sel = f'#accuracy-table tr[data-model="{model}"] td[data-domain="{domain}"]'
                    assert drv.find_element(By.CSS_SELECTOR, sel).text == f"{value:.3f}"
            assert len(drv.find_elements(By.CSS_SELECTOR, ".chart canvas")) >= 5  # uPlot drew the charts

            first = report["rounds_detail"][0]
            drv.find_element(By.CSS_SELECTOR, 'tr.round-row[data-round="1"]').click()
            details = drv.find_element(By.CSS_SELECTOR, 'tr[data-details="1"]')
            hashes = {
                a.get_attribute("data-hash") for a in details.find_elements(By.CSS_SELECTOR, "a[data-hash]")
            }
            blobs = {c["blob"] for c in first["commitments"]}
            assert blobs | {first["global_in"], first["global_out"]} <= hashes

        # the page redraws whenever a file of the run changes, and the run still writes report.md and
        # its plots after report.json says complete: an element read mid-redraw is stale, so read again
        for attempt in range(10):
            try:
                check_page()
                break
            except (StaleElementReferenceException, NoSuchElementException):
                if attempt == 9:
                    raise
                time.sleep(0.5)

        drv.find_element(By.CSS_SELECTOR, '.tabs button[data-kind="txlog"]').click()
        n_tx = len((run_dir / "chain" / "txlog.jsonl").read_text().splitlines())
        WebDriverWait(drv, 30).until(
            lambda d: d.find_element(By.ID, "records-note").text.startswith(f"{n_tx} record(s)")
        )
    finally:
        drv.quit()
