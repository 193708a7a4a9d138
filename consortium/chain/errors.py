"""One exception for every contract revert, whichever backend raised it."""

from __future__ import annotations

import re
from typing import Any

from eth_abi import decode
from web3.exceptions import ContractLogicError

_ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PREFIX = re.compile(r"^(?:VM Exception while processing transaction: )?(?:execution reverted:?\s*)", re.I)


class ContractVersionError(ValueError):
    """The address holds no contract, or one not built from this checkout's `Consortium.vy`: its storage
    and ABI would be misread (a run made before a contract change, or the wrong address)."""


class ChainError(Exception):
    """A transaction or call the contract refused; `reason` is the contract's revert string."""

    def __init__(self, reason: str, *, function: str = "", tx_hash: str | None = None) -> None:
        self.reason = reason
        self.function = function
        self.tx_hash = tx_hash
        where = f"{function}: " if function else ""
        super().__init__(f"{where}{reason}")


def _decode_data(data: Any) -> str | None:
    """Decode Error(string) revert data (hex str or bytes); None if it is not that."""
    if isinstance(data, str):
        try:
            data = bytes.fromhex(data.removeprefix("0x"))
        except ValueError:
            return None
    if not isinstance(data, bytes | bytearray) or not data.startswith(_ERROR_SELECTOR):
        return None
    try:
        return str(decode(["string"], bytes(data[4:]))[0])
    except Exception:
        return None


def reason_from(exc: BaseException) -> str | None:
    """The revert reason inside a backend exception, or None if `exc` is not a revert.

    eth-tester raises TransactionFailed("execution reverted: why"); JSON-RPC nodes surface as
    web3's ContractLogicError with the ABI-encoded reason in `.data`.
    """
    is_revert = isinstance(exc, ContractLogicError)
    try:
        from eth_tester.exceptions import TransactionFailed  # optional: no eth-tester on the JSON-RPC path

        is_revert = is_revert or isinstance(exc, TransactionFailed)
    except ImportError:  # pragma: no cover - eth-tester is optional on the JSON-RPC path
        pass
    if not is_revert:
        return None
    decoded = _decode_data(getattr(exc, "data", None))
    if decoded is not None:
        return decoded
    msg = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc.args[0] if exc.args else None, bytes):
        decoded = _decode_data(exc.args[0])
        if decoded is not None:
            return decoded
    msg = _PREFIX.sub("", msg.strip().strip("'\"")).strip()
    return msg or "reverted without a reason"
