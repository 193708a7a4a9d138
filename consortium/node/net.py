"""The node's plumbing: the errors it stops with, and retrying what a network outage interrupts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests

from consortium.chain import ChainClient, RpcBackend
from consortium.node_config import NodeConfig
from consortium.store import StoreUnavailable

log = logging.getLogger("consortium.node")
TRANSIENT = (requests.ConnectionError, requests.Timeout, StoreUnavailable, ConnectionError, TimeoutError)


class NodeError(RuntimeError):
    """A problem the node cannot fix by waiting: it stops with this message."""


def connect(ncfg: NodeConfig, account: Any) -> ChainClient:
    backend = RpcBackend(ncfg.rpc_url, dev=ncfg.dev_chain)
    if not backend.w3.eth.get_code(ncfg.contract):
        raise NodeError(f"no contract at {ncfg.contract} on {ncfg.rpc_url} (wrong address or chain?)")
    client = ChainClient.at(backend, ncfg.contract, account)
    client.params()
    return client


def store_options(ncfg: NodeConfig) -> dict[str, Any]:
    """`open_store` options of the node's store: an HTTP store's time budget per call."""
    return {"budget": ncfg.store_budget_s} if ncfg.store.startswith(("http://", "https://")) else {}


def deployment_of(client: ChainClient) -> str:
    """Which deployment the client talks to: `chain id:block:block hash` of the contract's `Deployed`
    event. The contract address alone is not enough: a restarted dev chain redeploys at the same one."""
    w3 = client.w3
    deployed = next((e for e in client.history().events if e.name == "Deployed"), None)
    if deployed is None:
        raise NodeError(f"no Deployed event of the contract {client.contract_address} (wrong contract?)")
    block_hash = bytes(w3.eth.get_block(deployed.block)["hash"]).hex()
    return f"{w3.eth.chain_id}:{deployed.block}:{block_hash}"


def retry(fn: Callable[[], Any], what: str, attempts: int = 8, base: float = 0.5) -> Any:
    """Call `fn`, retrying transient network errors with exponential backoff (`base` seconds, doubling
    to 15 s); NodeError naming `what` after the last attempt."""
    for attempt in range(attempts):
        try:
            return fn()
        except TRANSIENT as e:
            if attempt == attempts - 1:
                raise NodeError(f"{what}: still unreachable after {attempts} attempts: {e}") from None
            delay = min(base * 2**attempt, 15.0)
            log.warning("%s: unreachable (%s); retrying in %.1fs", what, type(e).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


