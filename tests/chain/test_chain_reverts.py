"""Every revert path: the typed ChainError names the reason and the ledger is left unchanged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from chain_helpers import ETH, PARAMS, fingerprint, h, open_and_draw, to_vote_reveal

from consortium.chain import ChainClient, ChainError, Phase, Vote

Action = Callable[[], object]


def refused(c: ChainClient, action: Action, reason: str, extra: tuple[str, ...] = ()) -> ChainError:
    before = fingerprint(c, extra)
    with pytest.raises(ChainError) as info:
        action()
    assert info.value.reason == reason
    assert fingerprint(c, extra) == before
    return info.value


def test_unregistered_caller(chain: ChainClient, outsiders: list[str]) -> None:
    o = chain.as_account(outsiders[0])
    refused(chain, lambda: o.top_up(ETH), "not registered", (o.address,))
    refused(chain, lambda: o.open_round(chain.global_hash()), "not registered", (o.address,))
    refused(chain, o.announce_exit, "not registered", (o.address,))
    rid = open_and_draw(chain)
    refused(chain, lambda: o.commit(rid, h("x"), "u"), "not a proposer", (o.address,))
    chain.advance_to_phase(Phase.CANDIDATE)
    refused(chain, lambda: o.post_candidate(rid, h("x"), 0), "not registered", (o.address,))


def test_stake_below_minimum(chain: ChainClient, outsiders: list[str]) -> None:
    o = chain.as_account(outsiders[0])
    refused(chain, lambda: o.register(PARAMS.min_stake - 1), "stake below minimum", (o.address,))
    o.register(PARAMS.min_stake)
    assert o.participant().registered
    refused(chain, lambda: o.register(PARAMS.min_stake), "already registered")


def test_commit_outside_its_phase(chain: ChainClient) -> None:
    chain.open_round(chain.global_hash())
    rid = chain.round_info().round_id
    refused(chain, lambda: chain.commit(rid, h("u"), "u"), "not in commit phase")  # before the draw
    chain.advance_to_phase(Phase.DRAW)
    chain.draw()
    p = chain.as_account(chain.proposers()[0])
    chain.advance_to_phase(Phase.CANDIDATE)
    refused(chain, lambda: p.commit(rid, h("u"), "u"), "not in commit phase")  # after the deadline


def test_second_commit(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    p = chain.as_account(chain.proposers()[0])
    p.commit(rid, h("u"), "file:///u")
    refused(chain, lambda: p.commit(rid, h("v"), "file:///v"), "already committed")


def test_commit_by_non_proposer(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    v = chain.as_account(chain.voters()[0])
    refused(chain, lambda: v.commit(rid, h("u"), "u"), "not a proposer")
    refused(chain, lambda: chain.commit(rid + 1, h("u"), "u"), "wrong round")


def test_vote_by_non_voter(chain: ChainClient, outsiders: list[str]) -> None:
    rid = open_and_draw(chain)
    p = chain.as_account(chain.proposers()[0])
    chain.advance_to_phase(Phase.VOTE_COMMIT)
    refused(chain, lambda: p.commit_vote(rid, Vote(1, 0, h("s"))), "not a voter")
    o = chain.as_account(outsiders[0])
    refused(chain, lambda: o.commit_vote(rid, Vote(1, 0, h("s"))), "not a voter", (o.address,))


def test_vote_outside_its_phase(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    v = chain.as_account(chain.voters()[0])
    refused(chain, lambda: v.commit_vote(rid, Vote(1, 0, h("s"))), "not in vote commit phase")
    chain.advance_to_phase(Phase.VOTE_COMMIT)
    v.commit_vote(rid, Vote(1, 0, h("s")))
    refused(chain, lambda: v.reveal_vote(rid), "not in vote reveal phase")
    chain.advance_to_phase(Phase.FINALIZE)
    refused(chain, lambda: v.reveal_vote(rid), "not in vote reveal phase")


def test_reveal_not_matching_commit(chain: ChainClient) -> None:
    rid = to_vote_reveal(chain, choice=1)
    v = chain.as_account(chain.voters()[0])
    refused(chain, lambda: v.reveal_vote(rid, Vote(0, 0, h(f"salt-{v.address}"))), "reveal does not match")
    refused(chain, lambda: v.reveal_vote(rid, Vote(1, 0, h("other salt"))), "reveal does not match")


def test_double_reveal(chain: ChainClient) -> None:
    rid = to_vote_reveal(chain)
    v = chain.as_account(chain.voters()[0])
    v.reveal_vote(rid)
    refused(chain, lambda: v.reveal_vote(rid), "already revealed")


def test_finalize_too_early(chain: ChainClient) -> None:
    refused(chain, chain.finalize, "no round to finalize")
    rid = to_vote_reveal(chain)
    for v in chain.voters():
        chain.as_account(v).reveal_vote(rid)
    refused(chain, chain.finalize, "too early")
    chain.advance_to_phase(Phase.FINALIZE)
    chain.finalize()
    refused(chain, chain.finalize, "no round to finalize")


def test_withdraw_more_than_balance(chain: ChainClient) -> None:
    refused(chain, lambda: chain.withdraw(1), "amount exceeds balance")
    refused(chain, lambda: chain.withdraw(0), "zero amount")


def test_exit_during_open_role(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    for who in (chain.proposers()[0], chain.voters()[-1]):
        refused(chain, chain.as_account(who).announce_exit, "open role in round")
    p = chain.as_account(chain.proposers()[0])
    p.commit(rid, h("u"), "u")
    refused(chain, p.announce_exit, "open role in round")
    chain.advance_to_phase(Phase.FINALIZE)
    chain.finalize()
    p.announce_exit()  # the round has ended: now it may leave
    refused(chain, p.complete_exit, "cooldown not over")
    refused(chain, p.announce_exit, "exit announced")


def test_draw_and_open_guards(chain: ChainClient) -> None:
    refused(chain, chain.draw, "no round to draw")
    refused(chain, lambda: chain.open_round(h("not the global model")), "stale global hash")
    chain.open_round(chain.global_hash())
    refused(chain, lambda: chain.open_round(chain.global_hash()), "round in progress")
    refused(chain, chain.draw, "draw too early")


def test_seed_reveal_guards(chain: ChainClient) -> None:
    chain.open_round(chain.global_hash())
    rid = chain.round_info().round_id
    chain.commit_seed(rid, h("my seed"))
    refused(chain, lambda: chain.reveal_seed(rid, h("my seed")), "not in seed reveal phase")
    chain.advance_to_phase(Phase.SEED_REVEAL)
    refused(chain, lambda: chain.commit_seed(rid, h("late")), "not in seed commit phase")
    refused(chain, lambda: chain.reveal_seed(rid, h("another seed")), "reveal does not match")
    chain.reveal_seed(rid, h("my seed"))
    refused(chain, lambda: chain.reveal_seed(rid, h("my seed")), "no seed commitment")


def test_candidate_guards(chain: ChainClient) -> None:
    rid = open_and_draw(chain)
    refused(chain, lambda: chain.post_candidate(rid, h("agg"), 0), "not in candidate phase")
    chain.advance_to_phase(Phase.CANDIDATE)
    chain.post_candidate(rid, h("agg"), 0b01)
    other = chain.as_account(chain.participant_addresses()[1])  # one candidate per account
    refused(chain, lambda: other.post_candidate(rid, h("agg"), 0b01), "duplicate candidate")
    refused(
        chain,
        lambda: other.post_candidate(rid, h("agg"), 1 << PARAMS.n_proposers),
        "flag outside proposer slots",
    )
    refused(
        chain,
        lambda: other.post_candidate(rid, h("agg"), 0, 1 << PARAMS.n_proposers),
        "exclusion outside proposer slots",
    )


def test_reveal_of_unknown_candidate(chain: ChainClient) -> None:
    rid = to_vote_reveal(chain, choice=5)  # only one candidate was posted
    v = chain.as_account(chain.voters()[0])
    refused(chain, lambda: v.reveal_vote(rid), "no such candidate")


def _attacker(chain: ChainClient, payer: str, swallow: bool) -> object:
    import vyper
    from vyper.compiler.settings import Settings

    src = (Path(__file__).parent / "Attacker.vy").read_text()
    out = vyper.compile_code(src, output_formats=["abi", "bytecode"], settings=Settings(evm_version="cancun"))
    w3 = chain.w3
    factory = w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"])
    rcpt = w3.eth.wait_for_transaction_receipt(
        factory.constructor(chain.contract_address, swallow).transact({"from": payer})
    )
    att = w3.eth.contract(address=rcpt["contractAddress"], abi=out["abi"])
    for fn, value in ((att.functions.join(), 2 * ETH), (att.functions.leave(), 0)):
        w3.eth.wait_for_transaction_receipt(fn.transact({"from": payer, "value": value}))
    chain.mine(PARAMS.exit_cooldown)
    w3.eth.wait_for_transaction_receipt(att.functions.finish().transact({"from": payer}))
    return att


@pytest.mark.parametrize("swallow", [False, True], ids=["propagate", "swallow"])
def test_reentrancy_through_malicious_receiver(
    chain: ChainClient, outsiders: list[str], swallow: bool
) -> None:
    att = _attacker(chain, outsiders[0], swallow)
    attacker = chain.as_account(att.address)  # the contract is the participant
    assert attacker.participant().balance == 2 * ETH
    w3 = chain.w3
    if not swallow:  # the re-entry reverts, so does the receive hook, so does the whole withdraw
        payer = chain.as_account(outsiders[0])
        refused(chain, lambda: payer.transact(att.functions.attack(ETH)), "transfer failed", (att.address,))
        assert w3.eth.get_balance(att.address) == 0
        assert att.functions.reentered().call() == 0
        return
    # the hook swallows the failed re-entry: the outer withdraw pays exactly once
    pool, contract_eth = chain.reward_pool(), chain.contract_balance()
    w3.eth.wait_for_transaction_receipt(att.functions.attack(ETH).transact({"from": outsiders[0]}))
    assert att.functions.reentered().call() == 1 and att.functions.reentry_ok().call() is False
    assert w3.eth.get_balance(att.address) == ETH
    assert attacker.participant().balance == ETH
    assert chain.contract_balance() == contract_eth - ETH and chain.reward_pool() == pool
