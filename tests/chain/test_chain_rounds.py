"""Whole rounds: outcomes, economics, the draw recomputed off chain, history from events."""

from __future__ import annotations

from chain_helpers import ETH, GENESIS, PARAMS, fingerprint, h, open_and_draw, play_round, to_vote_reveal
from eth_account import Account

from consortium.chain import (
    ChainClient,
    Outcome,
    Phase,
    RoundState,
    SlashReason,
    draw_roles,
    round_seed,
    xor_seeds,
)
from consortium.chain.driver import Posting, ballots, commit_updates, post_candidates, vote_and_finalize


def bps(stake: int, b: int) -> int:
    return stake * b // 10_000


def test_accepted_round_moves_global_hash_and_pays(chain: ChainClient) -> None:
    pool = chain.reward_pool()
    r = play_round(chain, seeds=3)
    assert chain.global_hash() == r.candidate != GENESIS
    assert chain.round_info().state == RoundState.IDLE
    share = PARAMS.reward_per_round // (PARAMS.n_proposers + PARAMS.n_voters)
    for who in r.proposers + r.voters:
        assert chain.participant(who).balance == share
    assert chain.reward_pool() == pool - share * (PARAMS.n_proposers + PARAMS.n_voters)
    rec = chain.history().round(r.round_id)
    assert rec.outcome == Outcome.ACCEPTED and rec.winner == 1 and rec.global_hash == r.candidate
    assert set(rec.rewards) == set(r.proposers + r.voters) and not rec.slashes


def test_rejected_round_keeps_global_hash(chain: ChainClient) -> None:
    r = play_round(chain, accept=False)
    assert chain.global_hash() == GENESIS
    rec = chain.history().round(r.round_id)
    assert rec.outcome == Outcome.REJECTED
    assert not rec.rewards and not rec.slashes  # nothing accepted: nothing proven, nobody paid


def test_no_shows_and_no_quorum(chain: ChainClient, participants: list[str]) -> None:
    stakes = {a: chain.participant(a).stake for a in participants}
    r = play_round(chain, commit=1, reveal=0)
    rec = chain.history().round(r.round_id)
    assert rec.outcome == Outcome.NO_QUORUM and chain.global_hash() == GENESIS
    slashed = {who: (amt, why) for who, amt, why in rec.slashes}
    no_show = bps(stakes[r.proposers[1]], PARAMS.slash_no_show_bps)
    assert slashed[r.proposers[1]] == (no_show, SlashReason.NO_SHOW)
    assert r.proposers[0] not in slashed
    for v in r.voters:
        assert slashed[v][1] == SlashReason.NO_SHOW
        assert chain.participant(v).stake == stakes[v] - slashed[v][0]
    assert not rec.rewards


def test_minority_voter_and_flagged_proposer_are_slashed(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    props, voters = chain.roles()
    commit_updates(chain, rid)
    other = next(v for v in voters if v != chain.address)
    # the aggregator screened proposer 1 out
    post_candidates(chain, rid, [Posting(chain.address, h("agg"), [props[1]]), Posting(other, h("other"))])
    weights = {v: chain.participant(v).weight for v in voters}
    # all but the lightest voter accept; the lightest votes for the other candidate (a rejection
    # would be a private judgement, never slashed: test_chain_trust)
    order = sorted(voters, key=lambda v: weights[v])
    vote_and_finalize(chain, rid, ballots(voters, {order[0]: 2}))
    rec = chain.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED and chain.global_hash() == h("agg")
    reasons = {who: why for who, _, why in rec.slashes}
    assert reasons == {props[1]: SlashReason.REJECTED, order[0]: SlashReason.MINORITY}
    assert set(rec.rewards) == {props[0], *order[1:]}
    assert rec.candidates[0].flagged_addresses == (props[1],)


def test_excluded_proposer_is_not_rewarded_and_forfeits_only_the_bond(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    props, voters = chain.roles()
    stakes = {p: chain.participant(p).stake for p in props}
    commit_updates(chain, rid)
    other = next(v for v in voters if v != chain.address)
    # Multi-Krum left proposer 0 out, no evidence; the same hash with other marks is another candidate
    post_candidates(chain, rid, [Posting(chain.address, h("agg"), 0, [props[0]]), Posting(other, h("agg"))])
    assert chain.candidates() == [(h("agg"), 0, 0b01), (h("agg"), 0, 0)]
    vote_and_finalize(chain, rid, ballots(voters))
    rec = chain.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED and rec.winner == 1
    bond = stakes[props[0]] * PARAMS.proposal_bond_bps // 10_000  # proposing pays only with inclusion
    assert rec.slashes == [(props[0], bond, SlashReason.EXCLUDED)]
    assert {p: chain.participant(p).stake for p in props} == {**stakes, props[0]: stakes[props[0]] - bond}
    assert set(rec.rewards) == {*props[1:], *voters}
    assert rec.candidates[0].excluded_addresses == (props[0],) and rec.candidates[1].excluded == 0


def test_voter_flags_are_recorded_never_slashed_and_second_candidate_wins(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    voters = chain.voters()
    commit_updates(chain, rid)
    other = next(v for v in voters if v != chain.address)
    # the first is not what voters recompute
    post_candidates(chain, rid, [Posting(other, h("wrong")), Posting(chain.address, h("right"))])
    assert [c[0] for c in chain.candidates()] == [h("wrong"), h("right")]
    vote_and_finalize(chain, rid, ballots(voters, 2, flags=0b01))  # accept candidate 2, flag proposer 0
    rec = chain.history().round(rid)
    assert rec.outcome == Outcome.ACCEPTED and rec.winner == 2 and chain.global_hash() == h("right")
    assert not rec.slashes  # a voter's flag is a private loss check: it can exclude, never slash
    assert all(v.flags == 0b01 for v in rec.votes.values())


def test_draw_is_reproducible_off_chain(chain: ChainClient) -> None:
    for k in range(3):
        play_round(chain, seeds=k, accept=k != 1, label=f"d{k}")
    hist = chain.history()
    assert len(hist.rounds) == 3
    for rec in hist.rounds:
        assert rec.seed is not None
        props, voters = draw_roles(rec.seed, rec.owners, rec.weights, PARAMS.n_proposers, PARAMS.n_voters)
        assert (props, voters) == (rec.proposers, rec.voters)
        assert not set(props) & set(voters)
        block_hash = bytes(chain.w3.eth.get_block(rec.seed_block)["hash"])
        assert rec.seed == round_seed(block_hash, xor_seeds(list(rec.seed_reveals.values())), rec.round_id)


def test_history_matches_contract_state(chain: ChainClient, participants: list[str]) -> None:
    play_round(chain, commit=1, flagged=(0,))
    play_round(chain, accept=False, reveal=2)
    chain.as_account(participants[-1]).announce_exit()
    hist = chain.history()
    for a in participants:
        p, rec = chain.participant(a), hist.participants[a]
        assert (p.stake, p.balance, p.registered) == (rec.stake, rec.balance, rec.registered)
        assert p.index == rec.index
        assert p.weight == rec.weight(hist.min_stake)
    assert hist.reward_pool == chain.reward_pool() and hist.global_hash == chain.global_hash()
    assert chain.contract_balance() == hist.total_stake + hist.total_balance + hist.reward_pool


def test_exit_cooldown_and_withdraw_pay_out(chain: ChainClient, participants: list[str]) -> None:
    who = chain.as_account(participants[0])
    stake = who.participant().stake
    who.announce_exit()
    assert who.participant().weight == 0
    chain.mine(PARAMS.exit_cooldown)
    who.complete_exit()
    p = who.participant()
    assert (p.stake, p.balance, p.registered) == (0, stake, False)
    before = chain.w3.eth.get_balance(who.address)
    tx = who.withdraw(stake)
    gas_cost = tx.gas_used * chain.w3.eth.get_transaction_receipt(tx.tx_hash)["effectiveGasPrice"]
    assert chain.w3.eth.get_balance(who.address) == before + stake - gas_cost
    who.register(PARAMS.min_stake)  # back in, same index
    assert who.participant().index == p.index


def test_phase_tracking(chain: ChainClient) -> None:
    chain.open_round(chain.global_hash())
    nxt = chain.block_number() + 1
    assert chain.round_info().phase(nxt) == Phase.SEED_COMMIT
    chain.advance_to_phase(Phase.DRAW)
    assert chain.round_info().phase(chain.block_number() + 1) == Phase.DRAW
    chain.draw()
    info = chain.round_info()
    assert info.phase(chain.block_number() + 1) == Phase.COMMIT
    assert info.phase(info.vote_reveal_end) == Phase.FINALIZE


def test_refused_before_sending_and_after_mining_give_the_same_error(chain: ChainClient) -> None:
    rid = to_vote_reveal(chain)
    v = chain.as_account(chain.voters()[0])
    v.reveal_vote(rid)
    for preflight in (True, False):
        v.preflight = preflight
        before = fingerprint(chain)
        try:
            v.reveal_vote(rid)
        except Exception as exc:
            assert type(exc).__name__ == "ChainError" and exc.reason == "already revealed"  # type: ignore[attr-defined]
        assert fingerprint(chain) == before


def test_locally_signed_account(chain: ChainClient) -> None:
    acct = Account.from_key(h("a local key"))
    chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_transaction(
            {"from": chain.backend.accounts[0], "to": acct.address, "value": 5 * ETH}
        )
    )
    me = chain.as_account(acct)
    me.register(2 * ETH)
    assert me.participant().stake == 2 * ETH
    try:
        me.register(2 * ETH)
    except Exception as exc:
        assert getattr(exc, "reason", None) == "already registered"
    else:
        raise AssertionError("second register went through")


def test_bad_deployment_parameters_are_refused(chain: ChainClient) -> None:
    from dataclasses import replace

    import pytest

    from consortium.chain import ChainError

    with pytest.raises(ChainError) as info:
        ChainClient.deploy(chain.backend, replace(PARAMS, n_voters=33), GENESIS)
    assert info.value.reason == "n_voters out of range"


def test_plain_json_rpc_client_without_dev_shortcuts(chain: ChainClient, outsiders: list[str]) -> None:
    """A client built with connect(url): web3 picks the fees, preflight on, attached by address."""
    import pytest

    from consortium.chain import ChainError, RpcBackend, connect

    if not isinstance(chain.backend, RpcBackend):
        pytest.skip("needs the JSON-RPC backend")
    be = connect(chain.backend.url)
    assert isinstance(be, RpcBackend) and not be.dev
    c = ChainClient.at(be, chain.contract_address, outsiders[0])
    assert c.preflight and c.params() == PARAMS
    c.register(PARAMS.min_stake)
    with pytest.raises(ChainError) as info:
        c.register(PARAMS.min_stake)
    assert info.value.reason == "already registered"
    assert chain.participant(outsiders[0]).stake == PARAMS.min_stake
