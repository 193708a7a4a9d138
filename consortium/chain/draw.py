"""The role draw, recomputed off chain: anyone can check the contract's proposers and voters from
the recorded seed and the stake snapshot at the draw (both rebuilt from events by history()).

Contract rule (Consortium.draw): for k = 0 .. P+V-1, r_k = uint(keccak256(seed ‖ uint256(k))) mod
(remaining weight); pick the smallest participant index whose running weight exceeds r_k, then
remove that participant's weight. The first P picks are proposers, the next V voters. With fewer
than P + V participants eligible, P and V shrink to what can be drawn (`round_shape`).
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


MIN_ELIGIBLE = 2  # a proposer and a voter: with fewer eligible the contract cancels the round


def round_shape(eligible: int, n_proposers: int, n_voters: int, proposers_vote: bool) -> tuple[int, int]:
    """(proposers, drawn voters) of a round with `eligible` participants of positive weight.

    With too few eligible for P + V roles the contract draws everyone rather than cancelling, so that
    participants slashed below the minimum stake (or gone) cannot halt the consortium; the roles that
    vote keep their seats first. With the proposers voting every role votes, so the drawn voters give
    way (the proposers' updates train the model); otherwise the proposers give way, so that the vote
    keeps its weight (a winner needs more than a third of the draw's)."""
    if eligible < MIN_ELIGIBLE:
        raise ValueError(f"{eligible} eligible participants: a draw needs at least {MIN_ELIGIBLE}")
    need = min(eligible, n_proposers + n_voters)
    if need == n_proposers + n_voters:
        return n_proposers, n_voters
    if proposers_vote:
        props = min(n_proposers, need - 1)
        return props, need - props
    voters = min(n_voters, need - 1)
    return need - voters, voters


def draw_indices(seed: bytes, weights: Sequence[int], n_roles: int) -> list[int]:
    """0-based positions in `weights` (participant index - 1) of the first `n_roles` picks, in draw
    order. Sampling without replacement by weight; O(roles · n) here, which is fine off chain."""
    w = list(weights)
    if sum(1 for x in w if x > 0) < n_roles:
        raise ValueError(f"{n_roles} roles to draw from {sum(1 for x in w if x > 0)} eligible participants")
    picks: list[int] = []
    for k in range(n_roles):
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
    `proposers_vote` the proposers hold the seats after the drawn voters', in slot order. P and V are
    the deployment's; the round's may be fewer (`round_shape`)."""
    props, voters = round_shape(sum(1 for x in weights if x > 0), n_proposers, n_voters, proposers_vote)
    chosen = [owners[i] for i in draw_indices(seed, weights, props + voters)]
    proposers = chosen[:props]
    return proposers, chosen[props:] + (proposers if proposers_vote else [])
