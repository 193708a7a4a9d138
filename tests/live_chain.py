"""A smoke run made on a real anvil node: shared by the live-audit and live-dashboard tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

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
