"""A run's transaction log (`txlog.TxLog`) replayed on a seeded embedded EVM.

`replay(path, n_accounts=, seed=)` re-sends it all on a fresh `EmbeddedBackend(n_accounts, seed)`.
On the same seed and account count every transaction lands in the same block with the same hash
and status, and every block hash is the same; each difference becomes one line in
`Replay.problems`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.typed_transactions import TypedTransaction
from web3 import Web3

from .backends import EmbeddedBackend
from .client import ChainClient
from .errors import reason_from
from .txlog import TxLog, read_txlog


@dataclass
class Replay:
    """A log re-executed: the chain it built, a client on the replayed deployment (None when the log
    holds no deployment) and every difference from the recorded run."""

    backend: EmbeddedBackend
    client: ChainClient | None
    entries: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def replay(path: str | Path, *, n_accounts: int, seed: int, txlog: TxLog | None = None) -> Replay:
    """Re-send every entry of the log at `path`, in order, on a fresh `EmbeddedBackend(n_accounts,
    seed)` (the run's own account count and seed, for identical accounts and blocks), and compare
    each transaction's status, block and hash with the recorded ones. `txlog`: where the returned
    client logs what is sent after the replay (a run that goes on from the recorded chain)."""
    entries = read_txlog(path)  # all checked before anything is sent
    be = EmbeddedBackend(n_accounts, seed)
    w3 = be.w3
    problems: list[str] = []
    snaps = {int(w3.eth.block_number): be.snapshot()}
    deployed: tuple[str, str, int] | None = None  # address, deployer, block
    reverts = any(e["kind"] == "revert" for e in entries)
    for n, e in enumerate(entries, 1):
        if e["kind"] == "mine":
            be.mine(e["n"])
        elif e["kind"] == "revert":
            snap = snaps.get(e["block"])
            if snap is None:
                problems.append(f"txlog line {n}: revert to block {e['block']}, never a head on replay")
                break
            be.revert(snap)
        else:
            rcpt, problem = _resend(w3, e, n)
            if problem:
                problems.append(problem)
            if rcpt is not None and e["to"] is None and rcpt["status"] == 1 and deployed is None:
                deployed = (str(rcpt["contractAddress"]), e["from"], int(rcpt["blockNumber"]))
        if reverts:  # a later revert may come back to this head
            snaps[int(w3.eth.block_number)] = be.snapshot()
    client = None
    if deployed is None:
        problems.append(f"txlog {path}: no deployment to attach to")
    else:
        address, deployer, block = deployed
        account = deployer if deployer in be.accounts else be.accounts[0]
        client = ChainClient.at(be, address, account, deploy_block=block, txlog=txlog)
    return Replay(be, client, len(entries), problems)


def _resend(w3: Web3, e: dict[str, Any], n: int) -> tuple[Any, str | None]:
    """Send one logged transaction again; (receipt or None, the one-line problem or None)."""
    who = f"txlog line {n}: {e['function']} from {e['from']}"
    tx: dict[str, Any] = {"from": e["from"], "data": e["data"], "value": e["value"], "gas": e["gas"]}
    tx |= e["fees"]
    if e["to"] is not None:
        tx["to"] = e["to"]
    diffs: list[str] = []
    try:
        if "raw" in e:  # signed here with a local key: the node cannot sign for it, resend the bytes
            mismatch = _raw_mismatch(e)
            diffs += [mismatch] if mismatch else []
            tx_hash = w3.eth.send_raw_transaction(e["raw"])
        else:
            tx_hash = w3.eth.send_transaction(tx)  # type: ignore[arg-type]
        rcpt = w3.eth.wait_for_transaction_receipt(tx_hash)
    except Exception as exc:
        why = reason_from(exc) or f"{type(exc).__name__}: {exc}"
        return None, f"{who} could not be sent on replay: {_one_line(why)}"
    status = int(rcpt["status"])
    if status != e["status"]:
        if status == 1:
            diffs.append("reverted in the run but succeeds on replay")
        else:
            diffs.append(f"succeeded in the run but reverts on replay: {_why(w3, tx, rcpt)}")
    block = int(rcpt["blockNumber"])
    if block != e["block"]:
        diffs.append(f"mined in block {e['block']} in the run, {block} on replay")
    replayed = Web3.to_hex(rcpt["transactionHash"])
    if replayed != e["tx_hash"]:
        diffs.append(f"tx hash {e['tx_hash']} in the run, {replayed} on replay")
    made, wanted = rcpt.get("contractAddress"), e.get("contract")
    if e["to"] is None and wanted and made and Web3.to_checksum_address(made) != wanted:
        diffs.append(f"deployed at {wanted} in the run, {made} on replay")
    return rcpt, (f"{who} " + "; ".join(diffs) if diffs else None)


def _why(w3: Web3, tx: dict[str, Any], rcpt: Mapping[str, Any]) -> str:
    """Why a replayed transaction reverted: re-run as a call in its own block (one transaction a
    block on the embedded chain, and a failed one changes no contract state)."""
    call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
    try:
        w3.eth.call(call, block_identifier=int(rcpt["blockNumber"]))  # type: ignore[arg-type]
    except Exception as exc:
        return _one_line(reason_from(exc) or f"{type(exc).__name__}: {exc}")
    return "reverted (out of gas?)"


def _raw_mismatch(e: dict[str, Any]) -> str | None:
    """A locally signed entry replays from its signed bytes: say so if its fields were edited."""
    try:
        d = TypedTransaction.from_bytes(bytes.fromhex(e["raw"][2:])).as_dict()
    except Exception:
        return None  # a legacy transaction: nothing to compare field by field
    to = d.get("to") or None
    fields = {
        "to": Web3.to_checksum_address(to) if to else None,
        "data": Web3.to_hex(d.get("data", b"")),
        "value": int(d.get("value", 0)),
        "gas": int(d.get("gas", 0)),
    }
    edited = [k for k, v in fields.items() if v != e[k]]
    return f"fields {', '.join(edited)} differ from the signed transaction" if edited else None


def _one_line(s: str) -> str:
    return " ".join(str(s).split())
