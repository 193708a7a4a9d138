"""Contribution removal on chain: a proposal, stake-weighted approval by more than two thirds of the others'
stake, and an execution that rewinds the global hash to the base a round opened on and removes the target
(docs/contract.md, *Removal*). Every participant who breaks a rule is refused and changes nothing."""

from __future__ import annotations

import pytest
from chain_helpers import ETH, GENESIS, PARAMS, h, open_and_draw, play_round
from test_chain_reverts import refused

from consortium.chain import ChainClient
from consortium.chain.commitments import base_path

REMOVAL_ROUNDS = 10  # Consortium.vy: a proposal lapses once this many rounds opened after it
ZERO = b"\x00" * 32


def _world(chain: ChainClient, participants: list[str]) -> tuple[list[ChainClient], str]:
    """Clients of the eight participants (stakes 2..9 ETH) and the target: the 9-ETH one."""
    return [chain.as_account(a) for a in participants], participants[7]


def test_an_approved_removal_rewinds_the_model_and_the_target_never_takes_part_again(
    chain: ChainClient, participants: list[str]
) -> None:
    """Two rounds accepted, then the 9-ETH participant is removed from round 2 on: the others hold 35 ETH,
    so approvers need more than 23.3 ETH. At 23 ETH (2 + 8 + 7 + 6) execution is refused; at 28 ETH it
    goes through: the global hash is round 2's base (round 1's result), the target's exit has started,
    it is drawn in no later round and may never register again. The history records all of it."""
    cs, target = _world(chain, participants)
    play_round(chain, label="a")
    r1 = chain.global_hash()
    play_round(chain, label="b")
    assert chain.global_hash() != r1 and chain.history().round(2).base_hash == r1
    cs[0].propose_removal(target, 2)
    for c in cs[4:7]:  # 6, 7, 8 ETH
        c.approve_removal(1)
    assert chain.removal_support(chain.history().removals[0]) == (23 * ETH, 35 * ETH)
    refused(chain, chain.execute_removal, "not approved by two thirds of the others' stake")
    cs[3].approve_removal(1)  # 5 ETH: 28 of 35
    refused(chain, lambda: chain.open_round(chain.global_hash()), "approved removal pending")
    chain.as_account(participants[1]).execute_removal()  # anyone may carry it out
    assert chain.global_hash() == r1 and chain.removed(target) and chain.pending_removal() is None
    t = chain.participant(target)
    assert t.weight == 0 and t.exit_block > 0 and t.stake == 9 * ETH  # not slashed
    rm = chain.history().removals[0]
    assert (rm.from_round, rm.after_round, rm.base_hash) == (2, 2, r1)
    assert (
        (rm.approve_weight, rm.others_weight)
        == (rm.replayed_approve, rm.replayed_others)
        == (28 * ETH, 35 * ETH)
    )
    assert chain.history().superseded(3) == {2} and chain.history().superseded(2) == frozenset()
    for label in ("c", "d"):
        r = play_round(chain, label=label)
        assert target not in r.proposers + r.voters
    assert chain.history().round(3).base_hash == r1
    tc = chain.as_account(target)
    chain.mine(PARAMS.exit_cooldown)
    tc.complete_exit()
    assert tc.participant().balance >= 9 * ETH  # its stake back, with whatever it earned
    refused(chain, lambda: tc.register(PARAMS.min_stake), "removed from the consortium", (target,))
    refused(chain, lambda: cs[0].propose_removal(target, 1), "unknown or removed participant")


def test_a_participant_may_propose_its_own_removal_but_never_approves_it(
    chain: ChainClient, participants: list[str]
) -> None:
    """Leaving with one's data's influence: the target proposes, its own 9 ETH counts for nothing."""
    cs, target = _world(chain, participants)
    play_round(chain)
    cs[7].propose_removal(target, 1)
    assert chain.history().removals[0].approvers == []
    refused(chain, lambda: cs[7].approve_removal(1), "the target cannot approve")
    for c in cs[2:7]:  # 4 + 5 + 6 + 7 + 8 = 30 of 35
        c.approve_removal(1)
    chain.execute_removal()
    assert chain.global_hash() == GENESIS  # round 1 opened on the genesis


def test_every_broken_rule_of_a_removal_is_refused_and_changes_nothing(
    chain: ChainClient, participants: list[str], outsiders: list[str]
) -> None:
    cs, target = _world(chain, participants)
    o = chain.as_account(outsiders[0])
    extra = (target, outsiders[0])
    refused(chain, lambda: cs[0].propose_removal(target, 1), "no such round", extra)  # no round yet
    play_round(chain)
    refused(chain, lambda: o.propose_removal(target, 1), "not registered", extra)
    refused(chain, lambda: cs[0].propose_removal(outsiders[1], 1), "unknown or removed participant", extra)
    refused(chain, lambda: cs[0].propose_removal(target, 0), "no such round", extra)
    refused(chain, lambda: cs[0].propose_removal(target, 2), "no such round", extra)
    refused(chain, lambda: cs[0].approve_removal(1), "no such live removal proposal", extra)
    refused(chain, chain.execute_removal, "no such live removal proposal", extra)
    bases = [r.base_hash for r in chain.history().rounds]
    assert bytes(chain._read("path")) == base_path(bases)  # the chain of every round's base
    forged = h("another model")  # a proposer naming another base than round 1 opened on
    for path_before, proof in (
        (ZERO, [forged]),
        (ZERO, []),  # a proof of no round
        (forged, bases),  # a made-up start
    ):
        refused(
            chain,
            lambda p=path_before, b=proof: cs[0]._send("propose_removal", target, 1, p, b),
            "bases do not prove the round",
            extra,
        )
    cs[0].propose_removal(target, 1)
    refused(chain, lambda: cs[1].propose_removal(participants[6], 1), "removal pending", extra)
    refused(chain, lambda: cs[0].approve_removal(1), "approved already", extra)
    refused(chain, lambda: cs[1].approve_removal(2), "no such live removal proposal", extra)
    refused(chain, lambda: o.approve_removal(1), "not registered", extra)
    open_and_draw(chain)  # approvals may come in while a round runs; it is played out first
    for c in cs[1:7]:
        c.approve_removal(1)
    refused(chain, chain.execute_removal, "round in progress", extra)


def test_stake_that_leaves_after_approving_stops_counting(
    chain: ChainClient, participants: list[str]
) -> None:
    """Approvals are weighed at execution with the latest stakes: an approver that announced its exit
    holds no weight, so it cannot approve and then take its stake away."""
    cs, target = _world(chain, participants)
    play_round(chain)
    cs[6].propose_removal(target, 1)  # 8 ETH
    for c in cs[3:6]:  # 5 + 6 + 7: 26 of 35
        c.approve_removal(1)
    cs[6].announce_exit()  # 18 of 27: two thirds exactly, not more
    refused(chain, chain.execute_removal, "not approved by two thirds of the others' stake")
    cs[0].approve_removal(1)  # 20 of 27
    chain.execute_removal()
    assert chain.removed(target)


def test_an_unapproved_proposal_lapses_and_an_undone_round_cannot_be_rewound_to(
    chain: ChainClient, participants: list[str]
) -> None:
    """A proposal without enough approval lapses after REMOVAL_ROUNDS rounds opened (rounds keep going:
    only an approved one blocks them); a second removal cannot rewind to a round the first one undid:
    its base lies on the abandoned path."""
    cs, target = _world(chain, participants)
    play_round(chain, label="a")
    cs[0].propose_removal(target, 1)
    for i in range(REMOVAL_ROUNDS):
        play_round(chain, label=f"x{i}")
    assert chain.pending_removal() is not None  # round 11 is the deadline: still live between rounds
    play_round(chain, label="y")
    assert chain.pending_removal() is None
    refused(chain, lambda: cs[1].approve_removal(1), "no such live removal proposal")
    rid = chain.round_info().round_id
    cs[0].propose_removal(target, rid - 1)  # a new proposal is possible again
    for c in cs[1:7]:
        c.approve_removal(2)
    chain.execute_removal()
    assert chain.global_hash() == chain.history().round(rid - 1).base_hash
    play_round(chain, label="z")
    refused(chain, lambda: cs[0].propose_removal(participants[6], rid), "round undone by a removal")
    refused(chain, lambda: cs[0].propose_removal(participants[6], rid - 1), "round undone by a removal")
    cs[0].propose_removal(participants[6], rid - 2)  # before the undone range: on the path
    assert chain.history().removals[2].from_round == rid - 2


def test_approvals_whose_stake_left_cannot_fill_the_list_against_honest_ones(chain: ChainClient) -> None:
    """A proposal takes at most 128 approvals, and one whose stake has left counts 0. 127 sybils of
    `min_stake` approve (with the proposer, the list is full) and exit: the next honest approval drops
    them first instead of being refused, and the removal goes through. The history keeps the same list,
    so its recomputed weights equal the contract's (the audit's check)."""
    if chain.backend.kind != "embedded":
        pytest.skip("130 accounts: on the embedded EVM only")
    from consortium.chain import EmbeddedBackend

    backend = EmbeddedBackend(136)
    accounts = backend.accounts
    c = ChainClient.deploy(backend, PARAMS, GENESIS, fund=ETH, account=accounts[0])
    target, *honest = (c.as_account(a) for a in accounts[1:5])
    sybils = [c.as_account(a) for a in accounts[5:132]]
    for p in (target, *honest):
        p.register(10 * ETH)
    for s in sybils:
        s.register(PARAMS.min_stake)
    play_round(honest[0])
    honest[0].propose_removal(target.address, 1)
    for s in sybils:
        s.approve_removal(1)
    for s in sybils:
        s.announce_exit()
    for p in honest[1:]:
        p.approve_removal(1)  # refused with the list full, before the fix
    rm = c.history().removals[0]
    assert rm.approvers == [p.address for p in honest]
    assert c.removal_support(rm) == (30 * ETH, 30 * ETH)
    honest[0].execute_removal()
    rm = c.history().removals[0]
    assert (
        (rm.approve_weight, rm.others_weight)
        == (rm.replayed_approve, rm.replayed_others)
        == (30 * ETH, 30 * ETH)
    )
    assert c.removed(target.address) and c.global_hash() == GENESIS


def test_the_live_dashboard_shows_each_removal_and_the_rounds_it_undid(
    chain: ChainClient, participants: list[str]
) -> None:
    """`consortium dashboard --rpc-url`: a pending proposal with the weight its approvers hold against
    the two-thirds threshold, then the executed removal, the base it rewound to and its undone round."""
    pytest.importorskip("starlette")
    from consortium.dashboard.live_chain import LiveChain

    cs, target = _world(chain, participants)
    live = LiveChain("(this test's chain)", chain.contract_address, None)
    live._client = chain  # the page's own client, on this test's backend
    play_round(chain, label="a")
    r1 = chain.global_hash()
    play_round(chain, label="b")
    cs[0].propose_removal(target, 2)
    for c in cs[4:7]:  # with the proposer's: 2 + 6 + 7 + 8 = 23 ETH of the others' 35
        c.approve_removal(1)
    s = live.build()
    assert s["problems"] == []
    (m,) = s["removals"]
    name = {p["account"]: p["name"] for p in s["run"]["participants_detail"]}
    assert (m["status"], m["participants"], m["from_round"]) == ("pending", [name[target]], 2)
    assert (m["approve_eth"], m["others_eth"], m["supported"]) == (23, 35, False)
    assert m["approvers"] == [name[c.address] for c in [cs[0], *cs[4:7]]]
    assert m["proposer"] == m["approvers"][0]
    assert all(r["undone_by"] is None for r in s["rounds"])
    cs[3].approve_removal(1)  # 28 of 35
    chain.execute_removal()
    play_round(chain, label="c")
    s = live.build()
    (m,) = s["removals"]
    assert (m["status"], m["after_round"], m["rounds_undone"]) == ("executed", 2, [2])
    assert (m["approve_eth"], m["others_eth"], m["supported"]) == (28, 35, True)
    assert m["global_adapter"] == r1.hex() == s["rounds"][2]["global_in"]
    assert [r["undone_by"] for r in s["rounds"]] == [None, 1, None]
