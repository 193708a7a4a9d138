"""Chain fixtures: every test here runs on the embedded EVM and on a real anvil node."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consortium.chain import AnvilNode, ChainClient, EmbeddedBackend, RpcBackend, find_anvil

sys.path.insert(0, str(Path(__file__).parent))  # chain_helpers.py beside this file

from chain_helpers import ETH, GENESIS, N_PARTICIPANTS, PARAMS

N_ACCOUNTS = 16  # 0: deployer, 1..8: participants, the rest: outsiders


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    binary = find_anvil()
    if binary is None:
        pytest.skip(
            "anvil not found: `make install` runs npm install --prefix .tools @foundry-rs/anvil "
            "(or set $ANVIL)"
        )
    node = AnvilNode(binary, n_accounts=N_ACCOUNTS).start()
    try:
        yield node.url
    finally:
        node.stop()


@pytest.fixture(scope="session", params=["embedded", "anvil"])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "embedded":
        return EmbeddedBackend(N_ACCOUNTS)
    return RpcBackend(request.getfixturevalue("anvil_url"), dev=True)


@pytest.fixture(scope="module")
def world(backend: Any) -> ChainClient:
    """One deployment per module with N_PARTICIPANTS registered (stakes 2..9 ETH), acting as
    participant 1; tests get it back pristine through `chain`."""
    acc = backend.accounts
    c = ChainClient.deploy(backend, PARAMS, GENESIS, fund=10 * ETH, account=acc[0])
    for i, a in enumerate(acc[1 : 1 + N_PARTICIPANTS]):
        c.as_account(a).register((2 + i) * ETH)
    return c.as_account(acc[1])


@pytest.fixture
def chain(world: ChainClient) -> Iterator[ChainClient]:
    snap = world.snapshot()
    try:
        yield world
    finally:
        world.revert(snap)


@pytest.fixture
def participants(world: ChainClient) -> list[str]:
    return world.backend.accounts[1 : 1 + N_PARTICIPANTS]


@pytest.fixture
def outsiders(world: ChainClient) -> list[str]:
    return world.backend.accounts[1 + N_PARTICIPANTS :]
