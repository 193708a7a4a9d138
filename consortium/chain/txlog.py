"""A run's chain as an append-only transaction log, and its exact replay on a seeded embedded EVM.

`TxLog(path)` is a JSONL file, one entry a line, flushed as it is written. A `ChainClient` given one
(`deploy(..., txlog=)`, `at(..., txlog=)`) appends every transaction it sends, the deployment and
reverted ones included, and every block it mines:

    {"kind": "tx", "from", "to" (null: a deployment), "data", "value", "gas", "fees",
     "function", "status", "block", "tx_hash"[, "contract"][, "raw"]}
    {"kind": "mine", "n"}
    {"kind": "revert", "block"}        (ChainClient.revert: back to the state after `block`)

`fees` holds the fee fields the transaction carried (`maxFeePerGas` and `maxPriorityFeePerGas`,
or `gasPrice`), `contract` the address a deployment created, and `raw` the signed bytes of a
transaction signed here with a local key (the node cannot sign for that account on replay).

`replay(path, n_accounts=, seed=)` re-sends it all on a fresh `EmbeddedBackend(n_accounts, seed)`.
On the same seed and account count every transaction lands in the same block with the same hash
and status, and every block hash is the same; each difference becomes one line in
`Replay.problems`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from web3 import Web3

from .backends import EmbeddedBackend
from .errors import reason_from

if TYPE_CHECKING:  # client.py imports this module
    from .client import ChainClient

FEE_FIELDS = ("maxFeePerGas", "maxPriorityFeePerGas", "gasPrice")
_TX_FIELDS: dict[str, type | tuple[type, ...]] = {
    "from": str,
    "to": (str, type(None)),
    "data": str,
    "value": int,
    "gas": int,
    "fees": dict,
    "function": str,
    "status": int,
    "block": int,
    "tx_hash": str,
}


class TxLog:
    """Append-only JSONL transaction log; each entry is flushed as it is written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = None

    def append(self, entry: Mapping[str, Any]) -> None:
        if self._f is None or self._f.closed:
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across calls
        self._f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._f.flush()

    def tx(self, sent: Mapping[str, Any], rcpt: Mapping[str, Any], function: str, raw: bytes | None) -> None:
        """Log a mined transaction: `sent` as the node returns it (eth_getTransactionByHash), `rcpt`
        its receipt."""
        to = sent.get("to")
        entry: dict[str, Any] = {
            "kind": "tx",
            "from": Web3.to_checksum_address(sent["from"]),
            "to": Web3.to_checksum_address(to) if to else None,
            "data": Web3.to_hex(sent["input"]),
            "value": int(sent["value"]),
            "gas": int(sent["gas"]),
            "fees": _fees(sent),
            "function": function,
            "status": int(rcpt["status"]),
            "block": int(rcpt["blockNumber"]),
            "tx_hash": Web3.to_hex(rcpt["transactionHash"]),
        }
        if entry["to"] is None and rcpt.get("contractAddress"):
            entry["contract"] = Web3.to_checksum_address(rcpt["contractAddress"])
        if raw is not None:
            entry["raw"] = Web3.to_hex(raw)
        self.append(entry)

    def mine(self, n: int) -> None:
        self.append({"kind": "mine", "n": int(n)})

    def revert(self, block: int) -> None:
        self.append({"kind": "revert", "block": int(block)})

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> TxLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fees(sent: Mapping[str, Any]) -> dict[str, int]:
    """The fee fields a transaction carried: the EIP-1559 caps for a type-2 transaction, else its
    gas price (nodes report both for type 2, the gas price then being the effective one)."""
    if sent.get("maxFeePerGas") is not None:
        return {k: int(sent[k]) for k in ("maxFeePerGas", "maxPriorityFeePerGas")}
    return {"gasPrice": int(sent["gasPrice"])}


def read_txlog(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of a log, checked; a malformed line raises ValueError naming file and line."""
    path = Path(path)
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            out.append(_parse(path, n, line))
    return out


def _parse(path: Path, n: int, line: str) -> dict[str, Any]:
    where = f"{path}: line {n}"
    try:
        e = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(e, dict):
        raise ValueError(f"{where}: not a JSON object")
    kind = e.get("kind")
    if kind == "mine":
        _need(where, e, {"n": int})
        if e["n"] < 0:
            raise ValueError(f"{where}: negative block count")
    elif kind == "revert":
        _need(where, e, {"block": int})
    elif kind == "tx":
        _need(where, e, _TX_FIELDS)
        bad = [k for k, v in e["fees"].items() if k not in FEE_FIELDS or not _is_int(v)]
        if bad or not e["fees"]:
            raise ValueError(f"{where}: bad fees {e['fees']}")
        for k in ("data", *(("raw",) if "raw" in e else ())):
            if not _is_hex(e[k]):
                raise ValueError(f"{where}: {k} is not hex")
    else:
        raise ValueError(f"{where}: unknown kind {kind!r}")
    return e


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_hex(v: Any) -> bool:
    if not isinstance(v, str) or not v.startswith("0x") or len(v) % 2:
        return False
    try:
        bytes.fromhex(v[2:])
    except ValueError:
        return False
    return True


def _need(where: str, e: dict[str, Any], fields: Mapping[str, type | tuple[type, ...]]) -> None:
    for k, t in fields.items():
        if k not in e:
            raise ValueError(f"{where}: missing {k!r}")
        ok = _is_int(e[k]) if t is int else isinstance(e[k], t)
        if not ok:
            raise ValueError(f"{where}: {k!r} has the wrong type ({type(e[k]).__name__})")


def head(w3: Web3) -> dict[str, Any]:
    """The chain head: latest block number and hash (hex), for a run to store and an audit to
    compare with its replay."""
    b = w3.eth.get_block("latest")
    return {"block": int(b["number"]), "hash": Web3.to_hex(b["hash"])}


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


def replay(path: str | Path, *, n_accounts: int, seed: int) -> Replay:
    """Re-send every entry of the log at `path`, in order, on a fresh `EmbeddedBackend(n_accounts,
    seed)` (the run's own account count and seed, for identical accounts and blocks), and compare
    each transaction's status, block and hash with the recorded ones."""
    from .client import ChainClient

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
        client = ChainClient.at(be, address, account, deploy_block=block)
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
    from eth_account.typed_transactions import TypedTransaction

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
