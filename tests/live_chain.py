"""A smoke run made on a real anvil node: shared by the live-audit and live-dashboard tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from consortium.chain import AnvilNode, find_anvil
from consortium.config import load_config
from consortium.sim import Simulation

LIVE_SMOKE = ["participants=4", "rounds=2", "data.n_train=16", "data.n_test=2", "train.local_steps=2"]


def anvil_node() -> Iterator[str]:
    """A fresh anvil for a module (skips the module where `make install` did not install anvil)."""
    binary = find_anvil()
    if binary is None:
        pytest.skip("anvil not found: `make install` runs npm install --prefix .tools @foundry-rs/anvil")
    node = AnvilNode(binary, n_accounts=6).start()
    try:
        yield node.url
    finally:
        node.stop()


def live_smoke_run(anvil: str, where: Path, extra: list[str]) -> tuple[Path, dict]:
    """The smoke preset's run on that node, with `extra` overrides; its run directory and report."""
    cfg = load_config(preset="smoke", overrides=[*LIVE_SMOKE, *extra, f'chain.rpc_url="{anvil}"'])
    path = Simulation(cfg, Console(quiet=True)).run(where, plots=False)
    return path, json.loads((path / "report.json").read_text())


def has_browser() -> bool:
    """Headless Chromium and its driver (Debian's `chromium`, `chromium-driver`) and selenium."""
    import importlib.util
    import shutil

    found = shutil.which("chromium") and shutil.which("chromedriver")
    return bool(found) and importlib.util.find_spec("selenium") is not None


def browser_round_outcomes(app: object, n_rounds: int) -> tuple[list[str], str]:
    """Serve `app` on a free port, open it in headless Chromium, wait until it shows `n_rounds`
    rounds, and return what the page says: each round's outcome cell and the status badge."""
    page = browser_page(app, n_rounds)
    return page["outcomes"], page["status"]


def browser_page(app: object, n_rounds: int) -> dict[str, Any]:
    """What headless Chromium shows of `app` once `n_rounds` rounds are on the page: each round's
    outcome cell, the status badge, and the removals table (hidden or not, and each row's cells)."""
    import shutil
    import threading

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from consortium.dashboard.serve import bind

    sock, url = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(
        options=opts, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    )
    try:
        drv.get(url)
        WebDriverWait(drv, 60).until(
            lambda d: d.execute_script("return document.body.dataset.rounds") == str(n_rounds)
        )
        outcomes = [
            drv.find_element(By.CSS_SELECTOR, f'tr.round-row[data-round="{r}"] td[data-field="outcome"]').text
            for r in range(1, n_rounds + 1)
        ]
        removals = [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in drv.find_elements(By.CSS_SELECTOR, "#removals-table tbody tr")
        ]
        return {
            "outcomes": outcomes,
            "status": drv.find_element(By.ID, "status").text,
            "removals_shown": drv.find_element(By.ID, "removals").is_displayed(),
            "removals": removals,
        }
    finally:
        drv.quit()
        server.should_exit = True
