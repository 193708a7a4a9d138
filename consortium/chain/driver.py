"""Drive a contract round phase by phase from one process, without a model or a store: the harness of
the contract tests (tests/chain) and of `bench/coalition.py`. Each step mines up to its phase (a dev
chain), then sends every participant's transaction; what to send is the caller's (the tests play the
ways in, the bench plays a coalition). The simulator and the nodes have their own loops: they train,
read the store and judge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .client import ChainClient
from .types import Phase, Tx, Vote


def digest(label: str) -> bytes:
    """A sha256 digest standing in for an update, an aggregate or a salt."""
    return hashlib.sha256(label.encode()).digest()


@dataclass(frozen=True)
class Posting:
    """One candidate to post: who posts it, its hash and its two bitmasks of proposer slots."""

    poster: str
    candidate_hash: bytes
    flagged: int | Sequence[str] = 0
    excluded: int | Sequence[str] = 0


def open_to_draw(
    c: ChainClient, seeders: Iterable[str] = (), seeds: Mapping[str, bytes] | None = None
) -> int:
    """Open a round on the current global hash; each of `seeders` commits a seed (`seeds[who]`, else a
    fresh one) and reveals it. Stops where `draw()` is allowed: the seed is public. Returns the round id."""
    c.open_round(c.global_hash())
    rid = c.round_info().round_id
    seeders = list(seeders)
    for who in seeders:
        c.as_account(who).commit_seed(rid, (seeds or {}).get(who))
    c.advance_to_phase(Phase.SEED_REVEAL)
    for who in seeders:
        c.as_account(who).reveal_seed(rid)
    c.advance_to_phase(Phase.DRAW)
    return rid


def open_and_draw(c: ChainClient, seeders: Iterable[str] = ()) -> int:
    """`open_to_draw`, then draw the roles."""
    rid = open_to_draw(c, seeders)
    c.draw()
    return rid


def commit_updates(
    c: ChainClient, rid: int, proposers: Sequence[str] | None = None, label: str = "u", uri: str = "file:///u"
) -> None:
    """Each of `proposers` (default: every drawn one) commits the digest of `{label}{slot}`."""
    for i, p in enumerate(c.proposers() if proposers is None else proposers):
        c.as_account(p).commit(rid, digest(f"{label}{i}"), uri)


def post_candidates(c: ChainClient, rid: int, postings: Iterable[Posting]) -> None:
    """Mine to the candidate phase and post each candidate, in order (candidate k is the k-th)."""
    c.advance_to_phase(Phase.CANDIDATE)
    for p in postings:
        c.as_account(p.poster).post_candidate(rid, p.candidate_hash, p.flagged, p.excluded)


def commit_votes(c: ChainClient, rid: int, ballots: Mapping[str, Vote]) -> None:
    """Mine to the vote-commit phase; each voter commits its ballot (kept by the client for the reveal)."""
    c.advance_to_phase(Phase.VOTE_COMMIT)
    for v, ballot in ballots.items():
        c.as_account(v).commit_vote(rid, ballot)


def reveal_votes(c: ChainClient, rid: int, voters: Iterable[str]) -> None:
    """Mine to the vote-reveal phase; each of `voters` reveals the ballot it committed."""
    c.advance_to_phase(Phase.VOTE_REVEAL)
    for v in voters:
        c.as_account(v).reveal_vote(rid)


def finalize(c: ChainClient) -> Tx:
    """Mine to the finalize phase and settle the round."""
    c.advance_to_phase(Phase.FINALIZE)
    return c.finalize()


def vote_and_finalize(
    c: ChainClient, rid: int, ballots: Mapping[str, Vote], reveal: Iterable[str] | None = None
) -> Tx:
    """Every ballot committed, `reveal` (default: every voter with a ballot) revealed, then finalize."""
    commit_votes(c, rid, ballots)
    reveal_votes(c, rid, list(ballots) if reveal is None else reveal)
    return finalize(c)


def ballots(
    voters: Iterable[str], choice: int | Mapping[str, int] = 1, flags: int = 0, missing: int = 0
) -> dict[str, Vote]:
    """One ballot per voter: `choice` (or each voter's, default 1), the same `flags` and `missing`
    masks, and a salt of its own."""
    picks = choice if isinstance(choice, Mapping) else {}
    default = choice if isinstance(choice, int) else 1
    return {v: Vote(picks.get(v, default), flags, digest(f"salt-{v}"), missing) for v in voters}
