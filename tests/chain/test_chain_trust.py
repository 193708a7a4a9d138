"""Issue 22: a participant who reads the contract cannot steer a round, stall it, or take stake from
honest organisations. Each test here plays one way in and failed on the contract before its fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from chain_helpers import ETH, GENESIS, PARAMS, h, open_and_draw, play_round, to_vote_reveal
from eth_abi import encode
from eth_utils import keccak
from test_chain_reverts import refused

from consortium.chain import ChainClient, ChainError, Outcome, Phase, SlashReason, Vote, draw_roles
from consortium.chain.driver import (
    Posting,
    ballots,
    commit_updates,
    open_to_draw,
    post_candidates,
    vote_and_finalize,
)

# ---------------------------------------------------------------- item 1: the draw's stake snapshot


def _to_draw(c: ChainClient) -> int:
    """Open a round with two seed contributions and stop where draw() is allowed: the seed is public."""
    people = c.participant_addresses()[:2]
    return open_to_draw(c, people, {who: h(f"seed-{who}") for who in people})


def _roles_after(c: ChainClient, change: Callable[[list[str], list[str]], object]) -> tuple[list[str], ...]:
    """Roles drawn as they are, then (from the same block) after `change(proposers + voters, others)`."""
    snap = c.snapshot()
    c.draw()
    props, voters = c.roles()
    c.revert(snap)
    drawn = props + voters
    others = [a for a in c.participant_addresses() if a not in drawn]
    change(drawn, others)
    c.advance_to_phase(Phase.DRAW)
    c.draw()
    return (props, voters), c.roles()


@pytest.mark.parametrize("kind", ["top_up", "register", "announce_exit", "one_wei"])
def test_stake_changes_after_the_seed_do_not_change_the_draw(
    chain: ChainClient, outsiders: list[str], kind: str
) -> None:
    """Each change would (almost surely) reshuffle a draw on live stakes: a large top-up of someone
    not drawn, a large newcomer, the exit of someone drawn, one wei."""
    rid = _to_draw(chain)

    def change(drawn: list[str], others: list[str]) -> None:
        if kind == "top_up":
            chain.as_account(others[0]).top_up(500 * ETH)
        elif kind == "one_wei":
            chain.as_account(others[0]).top_up(1)
        elif kind == "register":
            chain.as_account(outsiders[0]).register(500 * ETH)
        else:
            chain.as_account(drawn[0]).announce_exit()

    before, after = _roles_after(chain, change)
    assert after == before
    # the draw recomputed off chain from history() uses the same snapshot
    rec = chain.history().round(rid)
    assert draw_roles(rec.seed, rec.owners, rec.weights, PARAMS.n_proposers, PARAMS.n_voters) == after


def test_a_stake_change_takes_effect_from_the_next_round(chain: ChainClient, outsiders: list[str]) -> None:
    rid = _to_draw(chain)
    newcomer = chain.as_account(outsiders[0])
    newcomer.register(500 * ETH)  # 500 of 544 ETH: drawn in the next round unless the snapshot is stale
    chain.draw()
    assert newcomer.address not in _everyone(chain)
    _finish(chain, rid)
    open_and_draw(chain)
    assert newcomer.address in _everyone(chain)
    rec = chain.history().round(rid + 1)
    assert dict(zip(rec.owners, rec.weights, strict=True))[newcomer.address] == 500 * ETH


def _everyone(c: ChainClient) -> list[str]:
    props, voters = c.roles()
    return props + voters


def _finish(c: ChainClient, rid: int) -> None:
    """Let a drawn round run out with every proposer committing and every voter accepting."""
    _play(c, rid, [Posting(c.address, h(f"fin{rid}"))], ballots(c.voters()), label=f"fin{rid}-")


def _play(
    c: ChainClient, rid: int, postings: list[Posting], votes: dict[str, Vote], label: str = "u"
) -> None:
    """The rest of a drawn round: every proposer commits, `postings` are posted, `votes` are cast and
    all revealed, finalize."""
    commit_updates(c, rid, label=label)
    post_candidates(c, rid, postings)
    vote_and_finalize(c, rid, votes)


def test_an_exiting_role_holder_cannot_leave_before_its_round_settles(chain: ChainClient) -> None:
    """Exit announced while seeding (allowed: no role yet), then drawn from the snapshot: the stake
    stays until the round is settled, and a slash does not make it eligible again."""
    _to_draw(chain)
    snap = chain.snapshot()
    chain.draw()
    victim = chain.proposers()[0]
    chain.revert(snap)
    v = chain.as_account(victim)
    v.announce_exit()
    chain.advance_to_phase(Phase.DRAW)
    chain.draw()
    assert victim == chain.proposers()[0]
    chain.mine(PARAMS.exit_cooldown + 1)
    refused(chain, v.complete_exit, "open role in round", (victim,))
    chain.advance_to_phase(Phase.FINALIZE)
    chain.finalize()  # it never committed: slashed as a no-show
    after = v.participant()
    assert after.weight == 0 and after.exit_block > 0
    assert chain.weight_of_prefix(chain.n_participants()) == sum(p.weight for p in chain.all_participants())
    v.complete_exit()
    assert v.participant().balance == after.stake


# ---------------------------------------------------------------- item 5: slash on public evidence only


def _equal_world(chain: ChainClient, n: int = 9, stake: int = 2 * ETH) -> ChainClient:
    c = ChainClient.deploy(chain.backend, PARAMS, GENESIS, fund=ETH)
    for a in chain.backend.accounts[1 : 1 + n]:
        c.as_account(a).register(stake)
    return c.as_account(chain.backend.accounts[1])


def test_voters_flags_alone_never_slash(chain: ChainClient) -> None:
    """Every voter flags proposer 0 from its private loss check, yet accepts a candidate that does not:
    the flag is a judgement nobody else can recompute, so proposer 0 keeps its stake."""
    rid = open_and_draw(chain)
    _play(chain, rid, [Posting(chain.address, h("agg"))], ballots(chain.voters(), 1, flags=1))
    rec = chain.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED
    assert rec.slashes == []


def test_a_voter_who_rejects_an_accepted_candidate_is_not_slashed(chain: ChainClient) -> None:
    """Rejecting is a private judgement (its loss went up): not rewarded, never slashed. Voting for
    another candidate than the recomputed winner is evidence: slashed. 5 equal stakes, all drawn:
    four accepting voters hold 4/7 of the stake, more than a third."""
    c = _equal_world(chain, n=7)
    rid = open_and_draw(c)
    voters = c.voters()
    commit_updates(c, rid)
    other = next(v for v in voters if v != c.address)
    post_candidates(c, rid, [Posting(c.address, h("agg")), Posting(other, h("bad"))])
    for wrong in (0, 2):  # reject, then vote for the other candidate
        snap = c.snapshot()  # anvil spends a snapshot on revert: one each time
        vote_and_finalize(c, rid, ballots(voters, {voters[0]: wrong}))
        rec = c.history().round(rid)
        assert rec.outcome == Outcome.ACCEPTED
        assert {w for w, _, _ in rec.slashes} == (set() if wrong == 0 else {voters[0]})
        assert voters[0] not in rec.rewards
        c.revert(snap)


def test_a_withheld_reveal_costs_at_least_the_minority_slash(chain: ChainClient) -> None:
    """The last voter to reveal sees the tally; withholding must not be cheaper than losing."""
    params = replace(PARAMS, slash_no_show_bps=100, slash_minority_bps=900)
    c = ChainClient.deploy(chain.backend, params, GENESIS, fund=ETH)
    for i, a in enumerate(chain.backend.accounts[1:9]):
        c.as_account(a).register((2 + i) * ETH)
    c = c.as_account(chain.backend.accounts[1])
    rid = to_vote_reveal(c)
    voters = c.voters()
    for v in voters[1:]:
        c.as_account(v).reveal_vote(rid)
    c.advance_to_phase(Phase.FINALIZE)
    stake = c.participant(voters[0]).stake
    c.finalize()
    rec = c.history().round(rid)
    assert (voters[0], stake * 900 // 10_000, SlashReason.NO_SHOW) in rec.slashes


def _missing_round(c: ChainClient, reporters: int, excluded: bool = True) -> tuple[int, list[str]]:
    """A round whose candidate leaves proposer 0 out (its poster could not fetch the blob) unless not
    `excluded`; every voter accepts it and the first `reporters` voters report proposer 0's blob missing."""
    rid = open_and_draw(c)
    props, voters = c.roles()
    votes = ballots(voters[:reporters], missing=0b01) | ballots(voters[reporters:])
    _play(c, rid, [Posting(c.address, h("agg"), 0, 0b01 if excluded else 0)], votes)
    return rid, props


@pytest.mark.parametrize("reporters", [0, 1])
def test_one_partys_missing_claim_never_slashes(chain: ChainClient, reporters: int) -> None:
    """The poster's store (or one voter) says proposer 0's blob is missing: the update is left out and
    forfeits the bond like any exclusion, but one party's claim is no evidence: no unavailable slash."""
    rid, props = _missing_round(chain, reporters)
    rec = chain.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED
    assert [(w, r) for w, _, r in rec.slashes] == [(props[0], SlashReason.EXCLUDED)]


def test_a_blob_jointly_reported_missing_is_slashed_as_unavailable(chain: ChainClient) -> None:
    """Every voter reports it (five parties, all the revealed weight): the 10% slash, reason unavailable."""
    rid, props = _missing_round(chain, PARAMS.n_voters)
    rec = chain.history().round(rid)
    stake = rec.weights[rec.owners.index(props[0])]  # unslashed before: its stake at the draw
    assert rec.slashes == [(props[0], stake * PARAMS.slash_rejected_bps // 10_000, SlashReason.UNAVAILABLE)]
    assert rec.votes[rec.voters[0]].missing == 0b01


def test_missing_reports_on_an_included_update_slash_nobody(chain: ChainClient) -> None:
    """The winning candidate holds proposer 0's update: someone could fetch it, so it was available."""
    rid, props = _missing_round(chain, PARAMS.n_voters, excluded=False)
    rec = chain.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED and rec.slashes == [] and props[0] in rec.rewards


def test_a_missing_report_outside_the_proposer_slots_is_refused(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    chain.advance_to_phase(Phase.VOTE_COMMIT)
    v = chain.as_account(chain.voters()[0])
    ballot = Vote(0, 0, h("salt"), 1 << PARAMS.n_proposers)
    v.commit_vote(rid, ballot)
    chain.advance_to_phase(Phase.VOTE_REVEAL)
    refused(chain, lambda: v.reveal_vote(rid, ballot), "missing outside proposer slots", (v.address,))


# ---------------------------------------------------------------- item 6: a third of the stake


def test_a_coalition_under_a_third_of_the_stake_never_gets_its_candidate_accepted(chain: ChainClient) -> None:
    """9 equal stakes, 5 voters: 3 colluding voters hold the revealed majority but only 3/9 of the stake
    (a third is not more than a third)."""
    c = _equal_world(chain)
    rid = open_and_draw(c)
    voters = c.voters()
    colluder = next(v for v in voters if v != c.address)
    postings = [Posting(c.address, h("honest")), Posting(colluder, h("coalition"))]
    _play(c, rid, postings, ballots(voters, {v: 2 if i < 3 else 1 for i, v in enumerate(voters)}))
    rec = c.history().round(rid)
    assert rec.outcome == Outcome.REJECTED
    assert c.global_hash() == GENESIS
    assert rec.slashes == []  # nothing was proven: no winner, no minority


def test_honest_voters_over_a_third_of_the_stake_accept(chain: ChainClient) -> None:
    c = _equal_world(chain, n=8)  # 5 voters of 8 equal stakes: 5/8 > 1/3
    result = play_round(c)
    assert c.history().round(result.round_id).outcome == Outcome.ACCEPTED


# ---------------------------------------------------------------- item 4: genesis


def test_the_genesis_is_fixed_at_deployment(chain: ChainClient) -> None:
    with pytest.raises(ChainError) as info:
        ChainClient.deploy(chain.backend, PARAMS, None)
    assert info.value.reason == "empty genesis"
    refused(chain, lambda: chain.open_round(h("someone else's adapter")), "stale global hash")


# ---------------------------------------------------------------- item 10: the smaller ways in


def test_one_candidate_per_account_and_none_from_an_exiting_one(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    drawn = _everyone(chain)
    idle = [a for a in chain.participant_addresses() if a not in drawn]
    chain.advance_to_phase(Phase.CANDIDATE)
    poster = chain.as_account(drawn[0])
    poster.post_candidate(rid, h("a"), 0)
    refused(chain, lambda: poster.post_candidate(rid, h("b"), 0), "one candidate per account")
    leaver = chain.as_account(idle[0])
    leaver.announce_exit()
    refused(chain, lambda: leaver.post_candidate(rid, h("c"), 0), "exit announced")


def test_too_many_candidates(chain: ChainClient) -> None:
    """Nine accounts, eight candidate slots (the window fits one transaction per block)."""
    c = ChainClient.deploy(chain.backend, replace(PARAMS, candidate_blocks=12), GENESIS, fund=ETH)
    posters = chain.backend.accounts[1:10]
    for a in posters:
        c.as_account(a).register(ETH)
    c = c.as_account(posters[0])
    rid = open_and_draw(c)
    c.advance_to_phase(Phase.CANDIDATE)
    for k, who in enumerate(posters[:8]):
        c.as_account(who).post_candidate(rid, h(f"c{k}"), 0)
    refused(c, lambda: c.as_account(posters[8]).post_candidate(rid, h("c8"), 0), "too many candidates")


def test_empty_hashes_are_refused(chain: ChainClient) -> None:
    z = b"\x00" * 32
    refused(chain, lambda: chain.open_round(z), "empty hash")
    rid = open_and_draw(chain)
    p = chain.as_account(chain.proposers()[0])
    refused(chain, lambda: p.commit(rid, z, "u"), "empty hash", (p.address,))
    chain.advance_to_phase(Phase.CANDIDATE)
    refused(chain, lambda: chain.post_candidate(rid, z, 0), "empty hash")


def test_reveal_without_a_vote_commitment(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    chain.advance_to_phase(Phase.VOTE_REVEAL)
    v = chain.as_account(chain.voters()[0])
    refused(chain, lambda: v.reveal_vote(rid, Vote(0)), "no vote commitment", (v.address,))


def test_complete_exit_without_announcing(chain: ChainClient) -> None:
    refused(chain, chain.complete_exit, "exit not announced", (chain.address,))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("min_stake", 0, "min_stake must be positive"),
        ("seed_blocks", 0, "phase length 0"),
        ("vote_reveal_blocks", 0, "phase length 0"),
        ("n_proposers", 0, "n_proposers out of range"),
        ("n_proposers", 33, "n_proposers out of range"),
        ("n_voters", 0, "n_voters out of range"),
        ("slash_rejected_bps", 10_001, "slash above 100%"),
        ("slash_no_show_bps", 10_001, "slash above 100%"),
        ("quorum_bps", 10_001, "quorum above 100%"),
        ("proposal_bond_bps", 10_001, "bond above 100%"),
    ],
)
def test_constructor_guards(chain: ChainClient, field: str, value: int, reason: str) -> None:
    with pytest.raises(ChainError) as info:
        ChainClient.deploy(chain.backend, replace(PARAMS, **{field: value}), GENESIS)
    assert info.value.reason == reason


def _legacy_vote_commitment(round_id: int, voter: str, vote: Vote) -> bytes:
    return keccak(
        encode(
            ["uint256", "address", "uint256", "uint256", "bytes32"],
            [round_id, voter, vote.choice, vote.flags, vote.salt],
        )
    )


def test_a_vote_commitment_binds_chain_and_contract(chain: ChainClient) -> None:
    """A commitment without chain id and contract address could be replayed from another deployment."""
    rid = open_and_draw(chain)
    chain.advance_to_phase(Phase.VOTE_COMMIT)
    v = chain.as_account(chain.voters()[0])
    vote = Vote(0, 0, h("salt"))
    v.transact(v.contract.functions.commit_vote(rid, _legacy_vote_commitment(rid, v.address, vote)))
    chain.advance_to_phase(Phase.VOTE_REVEAL)
    refused(chain, lambda: v.reveal_vote(rid, vote), "reveal does not match", (v.address,))


def test_a_seed_commitment_binds_chain_and_contract(chain: ChainClient) -> None:
    chain.open_round(chain.global_hash())
    rid = chain.round_info().round_id
    seed = h("seed")
    legacy = keccak(encode(["uint256", "address", "bytes32"], [rid, chain.address, seed]))
    chain.transact(chain.contract.functions.commit_seed(rid, legacy))
    chain.advance_to_phase(Phase.SEED_REVEAL)
    refused(chain, lambda: chain.reveal_seed(rid, seed), "reveal does not match")


def test_a_seed_committed_with_the_previous_reveal_is_revealed_and_drawn_with(chain: ChainClient) -> None:
    """One seed transaction a round: the reveal of round r carries the commitment for round r + 1."""
    c = chain
    rid = _to_draw(c)
    c.draw()
    _finish(c, rid)
    c.open_round(c.global_hash())
    c.commit_seed(rid + 1, h("s1"))
    c.advance_to_phase(Phase.SEED_REVEAL)
    c.reveal_seed(rid + 1, h("s1"), next_seed=h("s2"))
    refused(c, lambda: c.reveal_seed(rid + 1, h("s1")), "reveal does not match")  # the slot holds the next
    c.advance_to_phase(Phase.DRAW)
    c.draw()
    _finish(c, rid + 1)
    c.open_round(c.global_hash())
    assert c.precommitted_seed(rid + 2) == h("s2")
    c.advance_to_phase(Phase.SEED_REVEAL)
    c.reveal_seed(rid + 2)  # no commit_seed this round
    rec = c.history().round(rid + 2)
    assert rec.seed_commits == {c.address: keccak(_seed_encoding(c, rid + 2, h("s2")))}
    assert rec.seed_reveals == {c.address: h("s2")}
    c.advance_to_phase(Phase.DRAW)
    c.draw()
    rec = c.history().round(rid + 2)
    assert draw_roles(rec.seed, rec.owners, rec.weights, PARAMS.n_proposers, PARAMS.n_voters) == c.roles()


def _seed_encoding(c: ChainClient, rid: int, seed: bytes) -> bytes:
    types = ["uint256", "address", "uint256", "address", "bytes32"]
    return encode(types, [c.chain_id, c.contract_address, rid, c.address, seed])
