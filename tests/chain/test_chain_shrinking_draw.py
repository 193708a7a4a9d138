"""Fewer eligible participants than roles: the draw takes everyone eligible instead of cancelling, so
a participant that gets itself slashed below `min_stake` (or leaves) cannot halt the consortium (the
liveness hole of docs/protocol.md, 'Where it breaks'). Each test plays the participant who would
break a rule of the shrunk round."""

from __future__ import annotations

from dataclasses import replace

import pytest
from chain_helpers import ETH, PARAMS, equal_world, h, open_and_draw
from test_chain_reverts import refused

from consortium.chain import (
    ChainClient,
    Outcome,
    Params,
    Phase,
    RoundState,
    SlashReason,
    Vote,
    draw_roles,
    round_shape,
)
from consortium.chain.driver import Posting, ballots, commit_updates, post_candidates, vote_and_finalize

# a no-show proposer loses 60% of its 2 ETH: 0.8 ETH, below the 1 ETH minimum, out of every later draw
HARSH = replace(PARAMS, slash_no_show_bps=6000)
HARSH_COMMITTEE = replace(HARSH, proposers_vote=True, vote_commit_blocks=8, vote_reveal_blocks=8)


@pytest.mark.parametrize(
    ("eligible", "proposers_vote", "shape"),
    [
        (10, False, (4, 5)),  # enough: the deployment's roles
        (9, False, (4, 5)),
        (7, False, (2, 5)),  # the drawn voters keep their seats, the proposers give way
        (5, False, (1, 4)),  # one proposer at least
        (7, True, (4, 3)),  # every role votes: the proposers (the updates) keep theirs
        (5, True, (4, 1)),
        (4, True, (3, 1)),  # one drawn voter at least
        (2, False, (1, 1)),
        (2, True, (1, 1)),
    ],
)
def test_the_roles_that_vote_keep_their_seats_first(
    eligible: int, proposers_vote: bool, shape: tuple[int, int]
) -> None:
    assert round_shape(eligible, 4, 5, proposers_vote) == shape


def test_below_a_proposer_and_a_voter_there_is_no_draw() -> None:
    with pytest.raises(ValueError, match="1 eligible participants: a draw needs at least 2"):
        round_shape(1, 4, 5, False)


def _slash_two_proposers_out(c: ChainClient) -> set[str]:
    """A round whose two proposers never commit (voters reject): both fall below `min_stake`."""
    rid = open_and_draw(c)
    props, seats = c.roles()
    vote_and_finalize(c, rid, ballots(seats, 0))
    rec = c.history().round(rid)
    assert {(w, r) for w, _, r in rec.slashes} == {(p, SlashReason.NO_SHOW) for p in props}
    assert all(c.participant(p).stake < PARAMS.min_stake for p in props)
    return set(props)


@pytest.mark.parametrize("params", [HARSH, HARSH_COMMITTEE], ids=["voters", "committee"])
def test_participants_slashed_below_the_minimum_do_not_halt_the_rounds(
    chain: ChainClient, params: Params
) -> None:
    """8 equal stakes, 2 proposers + 5 voters: once two proposers no-show below the minimum, 6 are
    eligible for 7 roles. The next round draws all six (recomputable off chain by `draw_roles`), every
    seat votes in its own slot, and the round is accepted: nobody honest is slashed for a seat that
    does not exist."""
    c = equal_world(chain, params, n=8)
    gone = _slash_two_proposers_out(c)
    rid = open_and_draw(c)
    props, seats = c.roles()
    n_props, n_voters = round_shape(6, params.n_proposers, params.n_voters, params.proposers_vote)
    assert len(props) == n_props and len(seats) == n_voters + (n_props if params.proposers_vote else 0)
    assert not gone & {*props, *seats} and len({*props, *seats}) == 6
    rec = c.history().round(rid)
    drawn = draw_roles(
        rec.seed, rec.owners, rec.weights, params.n_proposers, params.n_voters, params.proposers_vote
    )
    assert drawn == (props, seats) == (rec.proposers, rec.voters)
    info = c.round_info()
    assert (info.n_proposers, info.n_voters, info.voter_weight) == (
        len(props),
        len(seats),
        2 * ETH * len(seats),
    )
    commit_updates(c, rid)
    post_candidates(c, rid, [Posting(c.address, h("next"))])
    vote_and_finalize(c, rid, ballots(seats, 1))
    rec = c.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED and c.global_hash() == h("next")
    assert rec.slashes == [] and set(rec.rewards) == {*props, *seats}


def test_a_flag_beyond_the_rounds_proposers_is_refused(chain: ChainClient) -> None:
    """The round has one proposer slot (6 eligible, 5 voters keep theirs): a candidate or a ballot
    naming slot 1, which the deployment has but this round does not, is refused, not slashed on."""
    c = equal_world(chain, HARSH, n=8)
    _slash_two_proposers_out(c)
    rid = open_and_draw(c)
    props, seats = c.roles()
    assert len(props) == 1
    commit_updates(c, rid)
    c.advance_to_phase(Phase.CANDIDATE)
    poster = c.as_account(seats[0])
    refused(c, lambda: poster.post_candidate(rid, h("agg"), 1 << 1), "flag outside proposer slots")
    refused(c, lambda: poster.post_candidate(rid, h("agg"), 0, 1 << 1), "exclusion outside proposer slots")
    post_candidates(c, rid, [Posting(c.address, h("agg"))])
    voter = c.as_account(seats[0])
    c.advance_to_phase(Phase.VOTE_COMMIT)
    bad = Vote(1, 0, h("salt"), 1 << 1)  # reports the missing blob of a slot the round lacks
    voter.commit_vote(rid, bad)
    c.advance_to_phase(Phase.VOTE_REVEAL)
    refused(c, lambda: voter.reveal_vote(rid, bad), "missing outside proposer slots", (voter.address,))


def test_one_eligible_participant_cancels_the_round(chain: ChainClient, participants: list[str]) -> None:
    for a in participants[1:]:  # exits count from the next round opened
        chain.as_account(a).announce_exit()
    chain.open_round(chain.global_hash())
    chain.advance_to_phase(Phase.DRAW)
    chain.draw()
    assert chain.round_info().state == RoundState.IDLE
    assert chain.history().rounds[-1].outcome == Outcome.CANCELLED
