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

`consortium.chain.replay` re-sends it all on a fresh embedded EVM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from web3 import Web3

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
