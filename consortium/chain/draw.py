"""The role draw, recomputed off chain: anyone can check the contract's proposers and voters from
the recorded seed and the stake snapshot at the draw (both rebuilt from events by history()).

Contract rule (Consortium.draw): for k = 0 .. P+V-1, r_k = uint(keccak256(seed ‖ uint256(k))) mod
(remaining weight); pick the smallest participant index whose running weight exceeds r_k, then
remove that participant's weight. The first P picks are proposers, the next V voters.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from eth_utils import keccak


def round_seed(entropy_block_hash: bytes, seed_acc: int, round_id: int) -> bytes:
    """The round seed: keccak256(blockhash(seed_block) ‖ xor of revealed seeds ‖ round_id)."""
    return keccak(entropy_block_hash + seed_acc.to_bytes(32, "big") + round_id.to_bytes(32, "big"))


def xor_seeds(seeds: Sequence[bytes]) -> int:
    """The on-chain accumulator of revealed participant seeds."""
    acc = 0
    for s in seeds:
        acc ^= int.from_bytes(s, "big")
    return acc


def draw_indices(seed: bytes, weights: Sequence[int], n_proposers: int, n_voters: int) -> list[int]:
    """0-based positions in `weights` (participant index - 1), in draw order.

    Sampling without replacement by weight; O(roles · n) here, which is fine off chain.
    """
    w = list(weights)
    if sum(1 for x in w if x > 0) < n_proposers + n_voters:
        raise ValueError("not enough eligible participants for the draw")
    picks: list[int] = []
    for k in range(n_proposers + n_voters):
        total = sum(w)
        r = int.from_bytes(keccak(seed + k.to_bytes(32, "big")), "big") % total
        pos = bisect_right(list(accumulate(w)), r)
        picks.append(pos)
        w[pos] = 0
    return picks


def draw_roles(
    seed: bytes,
    owners: Sequence[str],
    weights: Sequence[int],
    n_proposers: int,
    n_voters: int,
    proposers_vote: bool = False,
) -> tuple[list[str], list[str]]:
    """(proposers, voting seats) as addresses; `owners[i]` holds participant index i + 1. With
    `proposers_vote` the proposers hold the seats after the drawn voters', in slot order."""
    picks = draw_indices(seed, weights, n_proposers, n_voters)
    chosen = [owners[i] for i in picks]
    proposers = chosen[:n_proposers]
    return proposers, chosen[n_proposers:] + (proposers if proposers_vote else [])
