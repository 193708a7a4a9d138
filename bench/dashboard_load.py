"""Page load time of `consortium dashboard` on a run directory, in headless Chromium (Selenium).

    python bench/dashboard_load.py RUN_DIR [--loads 7] [--screenshot docs/dashboard.png]
                                   [--out bench/results/dashboard_load.md]

RUN_DIR is a run directory (`report.json`) or a `consortium remove` directory (`removal.json`: the
page shows the removal and its replayed rounds).

A load is a fresh navigation with the browser cache disabled (the page, uPlot, the stylesheet and the
/api/state JSON are all fetched again) up to the first frame after the page has drawn every chart and
table (`window.__firstRenderMs`, measured from navigation start by the browser's own clock). Also
printed: the server's time to build /api/state from the files (no cache) and the JSON's size. The
server runs in this process, the browser beside it: on a shared machine the figures include whatever
else the cores are doing, so name the load next to them.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

from consortium.dashboard.app import STATIC, make_app
from consortium.dashboard.serve import bind
from consortium.dashboard.state import build_state


def start_server(run_dir: Path) -> str:
    import uvicorn

    sock, url = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(make_app(run_dir, warn=lambda _: None), log_level="error"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    return url


def browser(width: int, height: int):  # type: ignore[no-untyped-def]
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", f"--window-size={width},{height}"):  # fmt: skip
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "chromedriver")
    return webdriver.Chrome(options=opts, service=service)


def load_once(drv, url: str) -> float:  # type: ignore[no-untyped-def]
    """Milliseconds from navigation start to the first full render."""
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get("about:blank")
    drv.get(url)
    wait = WebDriverWait(drv, 60, poll_frequency=0.02)
    return float(wait.until(lambda d: d.execute_script("return window.__firstRenderMs")))


def page_bytes() -> int:
    """What a load fetches besides /api/state: the page's own files (uPlot included)."""
    html = (STATIC / "index.html").read_text()
    return sum(
        (STATIC.parent / ref).stat().st_size for ref in re.findall(r'(?:src|href)="([^"]+)"', html)
    ) + len(html.encode())


def describe(run_dir: Path) -> str:
    """The results file's first line: what was loaded. ValueError when it is neither a run directory
    nor a removal directory."""
    if (run_dir / "report.json").is_file():
        r = json.loads((run_dir / "report.json").read_text())
        return (
            f"run directory: {run_dir.name}: {r['rounds_completed']} of {r['rounds']} rounds, "
            f"{r['participants']} participants, status {r['status']}"
        )
    if (run_dir / "removal.json").is_file():
        r = json.loads((run_dir / "removal.json").read_text())
        what = r["removal"]
        return (
            f"removal directory: {run_dir.name}: {', '.join(what['participants'])} removed from round "
            f"{what['from_round']} by {what['method']}, {len(r['rounds'])} rounds replayed"
        )
    raise ValueError("neither report.json (a run directory) nor removal.json (a removal directory)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--loads", type=int, default=7)
    ap.add_argument("--screenshot", type=Path, default=None, help="PNG of the page after the last load")
    ap.add_argument("--out", type=Path, default=None, help="markdown results file")
    a = ap.parse_args()
    try:
        described = describe(a.run_dir)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {a.run_dir}: {e}", file=sys.stderr)
        return 2
    builds = []
    for _ in range(5):
        t0 = time.perf_counter()
        state = build_state(a.run_dir.resolve())
        builds.append((time.perf_counter() - t0) * 1000)
    state_bytes = len(json.dumps(state).encode())
    url = start_server(a.run_dir)
    drv = browser(1400, 2300)
    try:
        drv.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        loads = [load_once(drv, url) for _ in range(a.loads)]
        if a.screenshot:
            time.sleep(0.5)
            drv.save_screenshot(str(a.screenshot))
    finally:
        drv.quit()
    ms = loads
    lines = [
        described,
        f"page load (navigation start to first full render, cache off), {len(ms)} loads: "
        f"median {statistics.median(ms):.0f} ms, min {min(ms):.0f} ms, max {max(ms):.0f} ms",
        f"bytes per load: {page_bytes():,} of page, scripts and styles (uPlot included) + "
        f"{state_bytes:,} of /api/state JSON, which the server builds from the files in median "
        f"{statistics.median(builds):.1f} ms (5 builds)",
        f"machine: {platform.machine()}, python {platform.python_version()}, chromium headless",
    ]
    print("\n".join(lines))
    if a.out:
        a.out.write_text("\n".join(f"- {line}" for line in lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
