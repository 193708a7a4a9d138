"""Shared drivers for the chain tests: a deployed world and a full round."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from consortium.chain import ChainClient, Params, Phase, Tx, driver
from consortium.chain.driver import (
    Posting,
    ballots,
    commit_updates,
    commit_votes,
    digest,
    post_candidates,
    vote_and_finalize,
)

ETH = 10**18
PARAMS = Params(
    min_stake=ETH,
    seed_blocks=4,
    commit_blocks=6,
    candidate_blocks=4,
    vote_commit_blocks=6,
    vote_reveal_blocks=6,
    exit_cooldown=5,
    n_proposers=2,
    n_voters=5,  # 5 of 8 stakes of 2..9 ETH hold at least 20 of 44 ETH: more than the third a winner needs
    reward_per_round=ETH // 10,
    slash_rejected_bps=1000,
    slash_minority_bps=500,
    slash_no_show_bps=200,
    quorum_bps=5000,
)
N_PARTICIPANTS = 8
GENESIS = hashlib.sha256(b"genesis adapter").digest()


h = digest  # a sha256 digest standing in for an update or aggregate blob


@dataclass
class RoundResult:
    round_id: int
    proposers: list[str]
    voters: list[str]
    finalize: Tx | None
    candidate: bytes


def equal_world(chain: ChainClient, params: Params, n: int = 9) -> ChainClient:
    """A fresh deployment of `params` with `n` participants staking 2 ETH each (shares of the stake are
    counts of participants), acting as the first."""
    c = ChainClient.deploy(chain.backend, params, GENESIS, fund=ETH)
    for a in chain.backend.accounts[1 : 1 + n]:
        c.as_account(a).register(2 * ETH)
    return c.as_account(chain.backend.accounts[1])


def open_and_draw(c: ChainClient, seeds: int = 0) -> int:
    """Open a round on the current global hash, optionally with the first `seeds` participants'
    seed contributions, and draw."""
    return driver.open_and_draw(c, c.participant_addresses()[:seeds])


def play_round(
    c: ChainClient,
    *,
    accept: bool = True,
    commit: int | None = None,
    reveal: int | None = None,
    flagged: tuple[int, ...] = (),
    label: str = "r",
    seeds: int = 0,
) -> RoundResult:
    """One whole round: `commit` proposers commit, everyone votes accept (or reject), `reveal`
    voters reveal, then finalize."""
    rid = open_and_draw(c, seeds)
    props, voters = c.proposers(), c.voters()
    committing = props[: len(props) if commit is None else commit]
    commit_updates(c, rid, committing, f"{label}-{rid}-update-", f"file:///store/{label}{rid}")
    cand = h(f"{label}-{rid}-aggregate")
    post_candidates(c, rid, [Posting(c.address, cand, sum(1 << i for i in flagged))])
    revealing = voters[: len(voters) if reveal is None else reveal]
    tx = vote_and_finalize(c, rid, ballots(voters, 1 if accept else 0), revealing)
    return RoundResult(rid, props, voters, tx, cand)


def fingerprint(c: ChainClient, extra: tuple[str, ...] = ()) -> tuple[object, ...]:
    """Everything a refused transaction must leave as it was."""
    return (
        c.contract_balance(),
        c.reward_pool(),
        c.global_hash(),
        c.round_info(),
        tuple(c.all_participants()),
        tuple(c.participant(a) for a in extra),
    )


def to_vote_reveal(c: ChainClient, choice: int = 1) -> int:
    """Open, draw, all proposers commit, one candidate, all voters commit `choice`."""
    rid = open_and_draw(c)
    commit_updates(c, rid)
    post_candidates(c, rid, [Posting(c.address, h("agg"))])
    commit_votes(c, rid, ballots(c.voters(), choice))
    c.advance_to_phase(Phase.VOTE_REVEAL)
    return rid
