"""Sending a transaction as a node-held address or a local key, and why a call reverted."""

from __future__ import annotations

from typing import Any

from web3 import Web3

from .errors import ChainError, reason_from


def transact_as(w3: Web3, fn: Any, account: Any, tx: dict[str, Any]) -> tuple[Any, bytes | None]:
    """Send through the node's own key (address) or sign here (LocalAccount); the hash, and the
    signed bytes when signed here."""
    if isinstance(account, str):
        return fn.transact(tx), None
    full = fn.build_transaction({**tx, "nonce": w3.eth.get_transaction_count(account.address)})
    signed = account.sign_transaction(full)
    return w3.eth.send_raw_transaction(signed.raw_transaction), bytes(signed.raw_transaction)


def call_or_raise(fn: Any, tx: dict[str, Any], name: str, block: int | str = "latest") -> None:
    try:
        fn.call(tx, block_identifier=block)
    except Exception as exc:
        reason = reason_from(exc)
        if reason is None:
            raise
        raise ChainError(reason, function=name) from None


def replay_reason(fn: Any, tx: dict[str, Any], block: int) -> str:
    """Why a mined transaction failed: re-run it as a call in its own block (one transaction per
    block on dev nodes, and a failed one leaves the contract as it was)."""
    try:
        call_or_raise(fn, tx, "", block)
    except ChainError as err:
        return err.reason
    return "reverted (out of gas?)"
