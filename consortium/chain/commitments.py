"""The hashes a participant commits to and later opens: votes and seed contributions.

Both bind the chain id and the contract address, so a commitment made for one deployment cannot
be replayed on another (a redeployed anvil reuses addresses; a fork shares them)."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

from .types import Vote


def to_bytes32(value: bytes | str) -> bytes:
    """Accept 32 raw bytes or a 64-digit hex string (how the blob store names sha256 digests)."""
    if isinstance(value, str):
        value = bytes.fromhex(value.removeprefix("0x"))
    if len(value) != 32:
        raise ValueError(f"expected a 32-byte hash, got {len(value)} bytes")
    return bytes(value)


def vote_commitment(chain_id: int, contract: str, round_id: int, voter: str, vote: Vote) -> bytes:
    """keccak256(abi.encode(chain_id, contract, round_id, voter, choice, flags, missing, salt)), as the
    contract checks it."""
    return keccak(
        encode(
            ["uint256", "address", "uint256", "address", "uint256", "uint256", "uint256", "bytes32"],
            [chain_id, contract, round_id, voter, vote.choice, vote.flags, vote.missing, vote.salt],
        )
    )


def seed_commitment(chain_id: int, contract: str, round_id: int, who: str, seed: bytes) -> bytes:
    """keccak256(abi.encode(chain_id, contract, round_id, who, seed)), as the contract checks it."""
    types = ["uint256", "address", "uint256", "address", "bytes32"]
    return keccak(encode(types, [chain_id, contract, round_id, who, seed]))


def base_path(bases: list[bytes], start: bytes = b"\x00" * 32) -> bytes:
    """The contract's `path` after rounds that opened on `bases` (in order), from `start`:
    keccak256(path ++ base) at each opening."""
    acc = start
    for b in bases:
        acc = keccak(acc + b)
    return acc
