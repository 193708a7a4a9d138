"""`proposers_vote`: the round's proposers hold voting seats after the drawn voters'. With the voters
they hold enough stake that a coalition at a third of the stake cannot block the honest candidate by
voting for its own (the liveness gap of docs/protocol.md, 'Since issue 22: who can win a round'). Each
test plays the participant who would break a rule of the seats."""

from __future__ import annotations

from dataclasses import replace

import pytest
from chain_helpers import ETH, GENESIS, PARAMS, equal_world, h, open_and_draw
from test_chain_reverts import refused

from consortium.chain import ChainClient, ChainError, Outcome, Phase, SlashReason, Vote, draw_roles
from consortium.chain.driver import Posting, ballots, commit_updates, post_candidates, vote_and_finalize

# one transaction a block: the vote windows fit the 7 seats
COMMITTEE = replace(PARAMS, proposers_vote=True, vote_commit_blocks=8, vote_reveal_blocks=8)


def _coalition_round(c: ChainClient) -> tuple[int, list[str], set[str]]:
    """A round whose coalition is three of nine equal stakes (a third, never more): the first proposer
    and two drawn voters, who post an unscreened candidate and vote for it; every other seat votes for
    the honest candidate. Returns (round, proposers, coalition)."""
    rid = open_and_draw(c)
    props, seats = c.roles()
    drawn_voters = seats[: PARAMS.n_voters]
    coalition = {props[0], *[v for v in drawn_voters if v != c.address][:2]}
    commit_updates(c, rid)
    poster = next(v for v in sorted(coalition) if v != c.address)
    post_candidates(c, rid, [Posting(c.address, h("honest")), Posting(poster, h("coalition"))])
    vote_and_finalize(c, rid, ballots(seats, {v: 2 if v in coalition else 1 for v in seats}))
    return rid, props, coalition


def test_proposers_hold_the_seats_after_the_drawn_voters(chain: ChainClient) -> None:
    """The seats are the drawn voters, then the proposers in slot order; anyone recomputes them from
    the seed and the snapshot (`draw_roles`), and the quorum's base counts their weight."""
    c = equal_world(chain, COMMITTEE)
    rid = open_and_draw(c)
    props, seats = c.roles()
    assert len(props) == PARAMS.n_proposers and len(seats) == PARAMS.n_voters + PARAMS.n_proposers
    assert seats[PARAMS.n_voters :] == props and not set(seats[: PARAMS.n_voters]) & set(props)
    rec = c.history().round(rid)
    assert (rec.proposers, rec.voters) == (props, seats)
    assert draw_roles(rec.seed, rec.owners, rec.weights, PARAMS.n_proposers, PARAMS.n_voters, True) == (
        props,
        seats,
    )
    info = c.round_info()
    assert info.n_voters == len(seats) and info.voter_weight == 2 * ETH * len(seats)


def test_a_third_of_the_stake_blocks_the_drawn_voters_but_not_the_committee(chain: ChainClient) -> None:
    """The same coalition (a third of the stake: a proposer and two drawn voters) against the same
    honest votes. Drawn voters alone: the three honest ones hold 3/9 of the stake, not more than a third:
    rejected, the model stalls. With the proposers voting, the honest seats hold 4/9 and a majority of
    the revealed weight: accepted, and the coalition's voters pay the minority slash."""
    blocked = equal_world(chain, PARAMS)
    rid, *_ = _coalition_round(blocked)
    assert blocked.history().round(rid).outcome == Outcome.REJECTED
    assert blocked.global_hash() == GENESIS

    live = equal_world(chain, COMMITTEE)
    rid, props, coalition = _coalition_round(live)
    rec = live.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED and live.global_hash() == h("honest")
    minority = {w for w, _, r in rec.slashes if r == SlashReason.MINORITY}
    assert minority == coalition  # the coalition's proposer pays for its vote too
    assert props[1] in rec.rewards  # the honest proposer: paid for its included update and its vote


def test_a_proposer_that_does_not_vote_pays_the_withheld_vote(chain: ChainClient) -> None:
    """A seat is a duty: the proposer whose update was included but who never voted is still paid for
    the update, and slashed as a voter who withheld its vote."""
    c = equal_world(chain, COMMITTEE)
    rid = open_and_draw(c)
    props, seats = c.roles()
    commit_updates(c, rid)
    post_candidates(c, rid, [Posting(c.address, h("agg"))])
    silent = props[0]
    vote_and_finalize(c, rid, ballots([s for s in seats if s != silent], 1))
    rec = c.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED
    withheld = max(PARAMS.slash_no_show_bps, PARAMS.slash_minority_bps)
    assert rec.slashes == [(silent, 2 * ETH * withheld // 10_000, SlashReason.NO_SHOW)]
    assert silent in rec.rewards


def test_without_the_option_a_proposer_cannot_vote(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    chain.advance_to_phase(Phase.VOTE_COMMIT)
    p = chain.as_account(chain.proposers()[0])
    refused(chain, lambda: p.commit_vote(rid, Vote(1, 0, h("salt"))), "not a voter", (p.address,))


def test_a_voting_proposer_commits_its_vote_once_and_its_update_commit_stays(chain: ChainClient) -> None:
    """The vote's status bits are not the update's: committing the update does not count as a vote
    commitment (its reveal is refused), and a second vote commitment is refused."""
    c = equal_world(chain, COMMITTEE)
    rid = open_and_draw(c)
    p = c.as_account(c.proposers()[0])
    commit_updates(c, rid)
    post_candidates(c, rid, [Posting(c.address, h("agg"))])
    c.advance_to_phase(Phase.VOTE_COMMIT)
    vote = Vote(1, 0, h("salt"))
    p.commit_vote(rid, vote)
    refused(c, lambda: p.commit_vote(rid, vote), "already committed", (p.address,))
    other = c.as_account(c.proposers()[1])
    c.advance_to_phase(Phase.VOTE_REVEAL)
    refused(c, lambda: other.reveal_vote(rid, vote), "no vote commitment", (other.address,))
    p.reveal_vote(rid, vote)
    refused(c, lambda: p.reveal_vote(rid, vote), "already revealed", (p.address,))
    assert c.participant(p.address).role_status == 0b1101  # update committed; vote committed, revealed


def test_the_seats_must_fit_the_contract(chain: ChainClient) -> None:
    params = replace(COMMITTEE, n_proposers=16, n_voters=17)
    with pytest.raises(ChainError) as info:
        ChainClient.deploy(chain.backend, params, GENESIS)
    assert info.value.reason == "too many voting seats"
    ChainClient.deploy(chain.backend, replace(params, proposers_vote=False), GENESIS)  # 33 roles, 17 seats


def test_a_deployment_of_another_contract_version_is_refused_by_name(chain: ChainClient) -> None:
    """A run made before a contract change (here: this contract's code with one byte changed, as a
    Params field added or removed changes it) would be misread through this ABI (web3 failed with
    `InsufficientDataBytes`): attaching names the mismatch instead, and an empty address too."""
    from consortium.chain import ContractVersionError
    from consortium.chain.artifact import load_artifact

    art = load_artifact()
    init = bytearray(bytes.fromhex(art["bytecode"].removeprefix("0x")))
    runtime = bytes.fromhex(art["bytecode_runtime"].removeprefix("0x"))
    at = bytes(init).find(runtime)
    init[at + len(runtime) // 2] ^= 0x01  # a byte of the runtime, past the dispatcher
    w3 = chain.w3
    factory = w3.eth.contract(abi=art["abi"], bytecode=bytes(init))
    tx = factory.constructor(PARAMS.as_tuple(), GENESIS).transact({"from": chain.backend.accounts[0]})
    other = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    assert ChainClient.at(chain.backend, chain.contract_address).params() == PARAMS
    for address in (other, chain.backend.accounts[5]):
        with pytest.raises(ContractVersionError, match="artifact: source sha256"):
            ChainClient.at(chain.backend, address)
