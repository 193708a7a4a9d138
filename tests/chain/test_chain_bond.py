"""Issue 22, item 7: poisoning does not pay. Proposing costs a bond that only inclusion returns, so a
proposer whose update the accepted candidate always leaves out (a robust rule's or a probe's verdict)
loses stake every round it proposes, while one always included earns; both vote honestly.

The guarantee is the contract's settlement, not a lucky draw: every inequality below holds in every
draw, given only that each of the two has proposed in an accepted round at least once."""

from __future__ import annotations

from dataclasses import replace

from chain_helpers import ETH, GENESIS, PARAMS, h, open_and_draw

from consortium.chain import ChainClient, Outcome, Phase, SlashReason, Vote

BPS = 10_000
STAKE = 5 * ETH
BOND_BPS = 500  # 0.25 ETH of 5: more than all the voter rewards of the whole test (below)
REWARD = ETH // 100  # split among >= 3 voters a round: <= 0.0033 ETH each, < 0.14 ETH in 40 rounds
MAX_ROUNDS = 40


def _equal_world(chain: ChainClient, n: int = 6) -> ChainClient:
    """n equal stakes; 2 proposers and 3 voters a round (3 of 6 hold more than a third)."""
    params = replace(PARAMS, n_proposers=2, n_voters=3, reward_per_round=REWARD, proposal_bond_bps=BOND_BPS)
    c = ChainClient.deploy(chain.backend, params, GENESIS, fund=10 * ETH)
    for a in chain.backend.accounts[1 : 1 + n]:
        c.as_account(a).register(STAKE)
    return c.as_account(chain.backend.accounts[1])


def _worth(c: ChainClient, who: str) -> int:
    p = c.participant(who)
    return p.stake + p.balance


def test_an_always_excluded_proposer_loses_every_round_it_proposes_and_ends_below_an_included_one(
    chain: ChainClient,
) -> None:
    c = _equal_world(chain)
    people = c.participant_addresses()
    poisoner, honest = people[0], people[1]  # the candidate excludes the poisoner's update every time
    proposed = {poisoner: 0, honest: 0}
    for _ in range(MAX_ROUNDS):
        rid = open_and_draw(c)
        props, voters = c.roles()
        for i, p in enumerate(props):
            c.as_account(p).commit(rid, h(f"{rid}-{i}"), "file:///u")
        c.advance_to_phase(Phase.CANDIDATE)
        c.post_candidate(rid, h(f"agg-{rid}"), 0, [p for p in props if p == poisoner])
        c.advance_to_phase(Phase.VOTE_COMMIT)
        for v in voters:  # everyone votes honestly: for the recomputed candidate
            c.as_account(v).commit_vote(rid, Vote(1, 0, h(f"s{rid}{v}")))
        c.advance_to_phase(Phase.VOTE_REVEAL)
        for v in voters:
            c.as_account(v).reveal_vote(rid)
        c.advance_to_phase(Phase.FINALIZE)
        before = {p: (c.participant(p).stake, _worth(c, p)) for p in props}
        c.finalize()
        rec = c.history().round(rid)
        assert rec.outcome == Outcome.ACCEPTED
        for p in props:
            stake, worth = before[p]
            if p == poisoner:  # its stake strictly falls by the bond, and it earns nothing
                bond = stake * BOND_BPS // BPS
                assert (p, bond, SlashReason.EXCLUDED) in rec.slashes and p not in rec.rewards
                assert c.participant(p).stake == stake - bond and _worth(c, p) == worth - bond < worth
            else:  # included: the bond comes back with a reward
                assert p in rec.rewards and not [s for s in rec.slashes if s[0] == p]
                assert _worth(c, p) == worth + rec.rewards[p] > worth
            if p in proposed:
                proposed[p] += 1
        if all(proposed.values()):
            break
    assert all(proposed.values()), proposed  # (4/6)^40 < 1e-7 that either was never drawn to propose
    assert _worth(c, poisoner) < STAKE < _worth(c, honest)

