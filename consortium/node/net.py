"""The node's plumbing: the errors it stops with, and retrying what a network outage interrupts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from web3.exceptions import Web3RPCError

from consortium.chain import ChainClient, ChainError, ContractVersionError, RpcBackend
from consortium.node_config import NodeConfig
from consortium.store import StoreUnavailable

log = logging.getLogger("consortium.node")
TRANSIENT = (requests.ConnectionError, requests.Timeout, StoreUnavailable, ConnectionError, TimeoutError)


# reverts that mean "someone (maybe we, before a restart) already did it": success, not failure
ALREADY = (
    "round in progress",
    "no round to draw",
    "no round to finalize",
    "already committed",
    "already revealed",
    "duplicate candidate",
    "already registered",
)


class NodeError(RuntimeError):
    """A problem the node cannot fix by waiting: it stops with this message."""


def connect(ncfg: NodeConfig, account: Any) -> ChainClient:
    backend = RpcBackend(ncfg.rpc_url, dev=ncfg.dev_chain)
    try:  # no contract at that address, or one of another version
        client = ChainClient.at(backend, ncfg.contract, account)
    except ContractVersionError as e:
        raise NodeError(f"{ncfg.rpc_url}: {e}") from None
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


def send(what: str, call: Callable[[], Any], client: ChainClient, address: str) -> bool:
    """Send one transaction. True: it was mined, or the chain says it is already done. False: the
    window has passed or the contract refused for a reason logged here. Gas/funds: NodeError."""
    try:
        tx = call()
    except ChainError as e:
        if any(a in e.reason for a in ALREADY):
            log.info("%s: already done (%s)", what, e.reason)
            return True
        if e.reason in ("not registered", "stake below minimum"):
            raise NodeError(
                f"{what}: the contract refused: {e.reason} (account {address})"
            ) from None
        log.warning("%s: refused by the contract: %s", what, e.reason)
        return False
    except (ValueError, Web3RPCError) as e:  # node-side refusals: funds, gas, nonce
        text = str(e)
        if any(w in text.lower() for w in ("insufficient funds", "gas required exceeds", "out of gas")):
            bal = client.w3.eth.get_balance(address) / 10**18
            raise NodeError(
                f"{what}: account {address} cannot pay for gas ({bal:.6f} ETH); fund it: {text}"
            ) from None
        raise
    log.info("%s: mined in block %d (gas %d)", what, tx.block, tx.gas_used)
    return True
