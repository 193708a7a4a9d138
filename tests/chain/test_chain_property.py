"""Random sequences of register / top-up / exit / withdraw / fund / round steps (seed commits and reveals,
with next-round commitments, candidates with flag and exclusion masks, votes with flags and missing-blob
reports) against the invariants: contract ETH = stakes + balances + reward pool = deposits -
withdrawals, nothing negative, the global hash moves only on an accepted round, a proposal bond is
forfeited only by a proposer the accepted candidate excludes (and does not flag), an unavailable slash
only by one it excludes whose blob at least two revealed voters holding over half the revealed weight
report missing, a refused call leaves the contract's storage and balance as they were, history() =
contract state, and the draw recomputed off chain = the contract's. Removal proposals, approvals and
executions are among the steps: every round opens on the global hash the accepted rounds and the
executed removals left, and each removal rewound to its round's base with over two thirds of the
others' stake."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from chain_helpers import ETH, GENESIS, h
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from consortium.chain import (
    ChainClient,
    ChainError,
    Outcome,
    Params,
    Phase,
    RoundState,
    SlashReason,
    Vote,
    draw_roles,
)
from consortium.round.availability import jointly_missing

PROP_PARAMS = Params(
    min_stake=ETH,
    seed_blocks=3,  # two seed commits and three reveals fit (one transaction per block)
    commit_blocks=3,
    candidate_blocks=3,
    vote_commit_blocks=3,
    vote_reveal_blocks=3,
    exit_cooldown=3,
    n_proposers=1,
    n_voters=2,
    reward_per_round=ETH // 10,
    slash_rejected_bps=1000,
    slash_minority_bps=500,
    slash_no_show_bps=200,
    quorum_bps=5000,
    proposal_bond_bps=300,
)
N_PEOPLE = 7  # accounts 1..7; 1..4 registered at the start
FUND = 2 * ETH

who = st.integers(0, N_PEOPLE - 1)
ACTIONS = st.one_of(
    st.tuples(st.just("register"), who, st.integers(1, 6)),
    st.tuples(st.just("top_up"), who, st.integers(0, 3)),
    st.tuples(st.just("exit"), who),
    st.tuples(st.just("complete_exit"), who, st.booleans()),
    st.tuples(st.just("withdraw"), who, st.integers(0, 5)),
    st.tuples(st.just("fund"), who, st.integers(0, 3)),
    st.tuples(st.just("propose_removal"), who, who, st.integers(0, 3)),
    st.tuples(st.just("approve_removal"), who),
    st.tuples(st.just("execute_removal"), who),
    st.tuples(st.just("removal"), who, who, st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("step"), st.integers(0, 2**32 - 1), st.integers(1, 7)),
    st.tuples(st.just("step"), st.integers(0, 2**32 - 1), st.integers(1, 7)),
)


@pytest.fixture(scope="module")
def prop_world(backend: Any) -> ChainClient:
    acc = backend.accounts
    c = ChainClient.deploy(backend, PROP_PARAMS, GENESIS, fund=FUND, account=acc[0])
    for i, a in enumerate(acc[1:5]):
        c.as_account(a).register((2 + i) * ETH)
    c.preflight = False  # refusals are mined and replayed: fewer calls; preflight is tested elsewhere
    c.mine(1)  # the snapshot is an empty block: a revert re-imports it without re-running transactions
    return c


def storage_root(c: ChainClient, block: int | str) -> bytes | None:
    """The contract's storage root at `block` on the embedded EVM (None on a JSON-RPC node): one trie
    read, where comparing views would run the contract."""
    if c.backend.kind != "embedded":
        return None
    chain = c.backend.tester.backend.chain
    num = c.block_number() if block == "latest" else int(block)
    state = chain.get_vm(chain.get_canonical_block_header_by_number(num)).state
    return bytes(state._account_db._get_storage_root(bytes.fromhex(c.contract_address[2:])))


@dataclass
class Driver:
    c: ChainClient
    people: list[str]
    deposited: int
    withdrawn: int = 0
    refused: int = 0
    log: list[str] = field(default_factory=list)

    def light_state(self, actor: str, block: int | str = "latest") -> tuple[object, ...]:
        """What a refused call could have touched: on the embedded EVM the contract's whole storage (its
        root) and balance; on a node its balance and the actor's record (the full check of every refusal
        path is in test_chain_reverts.py)."""
        root = storage_root(self.c, block)
        if root is not None:
            return self.c.contract_balance(block), root
        return self.c.contract_balance(block), self.c.participant(actor, block)

    def attempt(self, actor: str, fn: Callable[[ChainClient], object], value: int = 0) -> bool:
        """Run one call as `actor`; a refusal must leave the ledger as it was in the block before."""
        before = self.c.block_number()
        try:
            fn(self.c.as_account(actor))
        except ChainError as err:
            self.refused += 1
            self.log.append(f"refused {err}")
            assert self.light_state(actor) == self.light_state(actor, before), f"refusal changed state: {err}"
            return False
        self.deposited += value
        return True

    def check_step(self) -> None:
        assert self.c.contract_balance() == self.deposited - self.withdrawn

    # ------------------------------------------------------------ actions

    def register(self, i: int, mult: int) -> None:
        amount = mult * ETH // 2
        self.attempt(self.people[i], lambda c: c.register(amount), amount)

    def top_up(self, i: int, mult: int) -> None:
        amount = mult * ETH // 2
        self.attempt(self.people[i], lambda c: c.top_up(amount), amount)

    def exit(self, i: int) -> None:
        self.attempt(self.people[i], lambda c: c.announce_exit())

    def complete_exit(self, i: int, wait: bool) -> None:
        if wait:
            self.c.mine(PROP_PARAMS.exit_cooldown)
        self.attempt(self.people[i], lambda c: c.complete_exit())

    def fund(self, i: int, mult: int) -> None:
        amount = mult * ETH // 4
        self.attempt(self.people[i], lambda c: c.fund(amount), amount)

    def withdraw(self, i: int, quarters: int) -> None:
        bal = self.c.participant(self.people[i]).balance
        amount = bal * quarters // 4 + (1 if quarters == 5 else 0)
        if self.attempt(self.people[i], lambda c: c.withdraw(amount)):
            self.withdrawn += amount

    def propose_removal(self, i: int, target: int, back: int) -> None:
        rid = self.c.round_info().round_id
        self.attempt(self.people[i], lambda c: c.propose_removal(self.people[target], max(0, rid - back)))

    def approve_removal(self, i: int) -> None:
        self.attempt(self.people[i], lambda c: c.approve_removal(max(1, len(c.history().removals))))

    def execute_removal(self, i: int) -> None:
        self.attempt(self.people[i], lambda c: c.execute_removal())

    def removal(self, i: int, target: int, back: int, approvers: int) -> None:
        """A whole removal in one action, among registered participants: the running round played out (a
        first one played if none was), a proposal from up to `back` rounds back, `approvers` others
        approving, an execution."""
        rnd = random.Random(i * N_PEOPLE + target)
        for _ in range(30):
            info = self.c.round_info()
            if info.round_id > 0 and info.phase(self.c.block_number() + 1) == Phase.IDLE:
                break
            self.phase_step(rnd)
        regs = [p for p in self.people if self.c.participant(p).registered] or self.people
        who, whom = regs[i % len(regs)], regs[target % len(regs)]
        rid = max(1, self.c.round_info().round_id - back)
        self.attempt(who, lambda c: c.propose_removal(whom, rid))
        rm = len(self.c.history().removals)
        for p in [p for p in regs if p not in (who, whom)][:approvers]:
            self.attempt(p, lambda c: c.approve_removal(rm))
        self.attempt(regs[0], lambda c: c.execute_removal())

    def step(self, seed: int, phases: int) -> None:
        rnd = random.Random(seed)
        for _ in range(phases):
            if not self.phase_step(rnd):
                return

    def phase_step(self, rnd: random.Random) -> bool:
        c = self.c
        info = c.round_info()
        phase = info.phase(c.block_number() + 1)
        advance = lambda p: c.advance_to_phase(p, info)  # noqa: E731
        actor = rnd.choice(self.people)
        rid = info.round_id
        if phase == Phase.IDLE:
            return self.attempt(actor, lambda a: a.open_round(a.global_hash()))
        if phase == Phase.SEED_COMMIT:
            for p in rnd.sample(self.people, 2):
                self.attempt(p, lambda a: a.commit_seed(rid, rnd.randbytes(32)))
            advance(Phase.SEED_REVEAL)
            return True
        if phase == Phase.SEED_REVEAL:  # some reveal, some also commit for the next round, some withhold
            for p in rnd.sample(self.people, 3):
                nxt = rnd.randbytes(32) if rnd.random() < 0.5 else None
                self.attempt(p, lambda a, n=nxt: a.reveal_seed(rid, next_seed=n))
            advance(Phase.DRAW)
            return True
        if phase == Phase.DRAW:
            return self.attempt(actor, lambda a: a.draw())
        props, voters = c.roles()
        if phase == Phase.COMMIT:
            for i, p in enumerate(props):
                if rnd.random() < 0.8:
                    self.attempt(p, lambda a, i=i: a.commit(rid, h(f"{rid}-{i}"), "file:///u"))
            advance(Phase.CANDIDATE)
        elif phase == Phase.CANDIDATE:
            for k in range(rnd.randint(1, 2)):
                flags, excluded = rnd.getrandbits(len(props)), rnd.getrandbits(len(props))
                poster = rnd.choice(self.people)
                post = lambda a, k=k, f=flags, x=excluded: a.post_candidate(rid, h(f"c{k}"), f, x)  # noqa: E731
                self.attempt(poster, post)
            advance(Phase.VOTE_COMMIT)
        elif phase == Phase.VOTE_COMMIT:
            n_cand = info.n_candidates
            for v in voters:
                if rnd.random() < 0.85:
                    choice, flags = rnd.randint(0, n_cand), rnd.getrandbits(len(props))
                    missing = rnd.getrandbits(len(props)) if rnd.random() < 0.5 else 0
                    ballot = Vote(choice, flags, rnd.randbytes(32), missing)
                    self.attempt(v, lambda a, b=ballot: a.commit_vote(rid, b))
            advance(Phase.VOTE_REVEAL)
        elif phase == Phase.VOTE_REVEAL:
            for v in voters:
                if rnd.random() < 0.85:
                    self.attempt(v, lambda a: a.reveal_vote(rid))
            advance(Phase.FINALIZE)
        else:
            return self.attempt(actor, lambda a: a.finalize())
        return True

    # ------------------------------------------------------------ end-of-sequence checks

    def check_all(self) -> None:
        c = self.c
        hist = c.history()
        assert c.contract_balance() == hist.total_stake + hist.total_balance + hist.reward_pool
        assert c.contract_balance() == self.deposited - self.withdrawn
        assert hist.reward_pool == c.reward_pool()
        on_chain = {p.address: p for p in c.all_participants()}
        assert set(on_chain) == set(hist.participants)
        for addr, rec in hist.participants.items():
            p = on_chain[addr]
            assert rec.stake >= 0 and rec.balance >= 0
            assert (p.stake, p.balance, p.registered) == (rec.stake, rec.balance, rec.registered)
            assert p.weight == rec.weight(hist.min_stake)
        g = GENESIS
        rewinds = {}  # round id -> the global hash the last removal executed before it opened set
        for rm in hist.removals:
            if rm.after_round is not None:
                assert rm.base_hash == hist.round(rm.from_round).base_hash and rm.target not in rm.approvers
                assert (rm.approve_weight, rm.others_weight) == (rm.replayed_approve, rm.replayed_others)
                assert rm.supported(rm.approve_weight, rm.others_weight)
                assert on_chain[rm.target].weight == 0 and c.removed(rm.target)
                rewinds[rm.after_round + 1] = rm.base_hash
        for r in hist.rounds:
            g = rewinds.get(r.round_id, g)
            assert r.base_hash == g, "a round opened on another model than the last accepted or rewound one"
            if r.outcome is None:
                continue
            if r.outcome == Outcome.ACCEPTED:
                g = r.candidates[r.winner - 1].candidate_hash
            assert r.global_hash == g, f"global hash moved in a {r.outcome.name} round"
            won = r.candidates[r.winner - 1] if r.outcome == Outcome.ACCEPTED else None
            for addr, amount, reason in r.slashes:
                if reason not in (SlashReason.EXCLUDED, SlashReason.UNAVAILABLE):
                    continue
                assert won is not None and addr in r.commits and amount > 0
                assert addr in won.excluded_addresses and addr not in won.flagged_addresses
                unavailable = jointly_missing(r.votes.values(), r.proposers.index(addr))
                assert (reason == SlashReason.UNAVAILABLE) == unavailable
            if r.seed is not None:
                drawn = draw_roles(r.seed, r.owners, r.weights, PROP_PARAMS.n_proposers, PROP_PARAMS.n_voters)
                assert drawn == (r.proposers, r.voters)
        g = rewinds.get(len(hist.rounds) + 1, g)
        assert c.global_hash() == hist.global_hash == g
        if c.round_info().state == RoundState.IDLE:
            assert all(r.outcome is not None for r in hist.rounds)


@pytest.fixture
def fresh(prop_world: ChainClient) -> Iterator[Callable[[], ChainClient]]:
    """Hands out the pristine deployment once per hypothesis example (snapshot / revert)."""
    snaps: list[Any] = []

    def get() -> ChainClient:
        if snaps:
            prop_world.revert(snaps.pop())
        snaps.append(prop_world.snapshot())
        return prop_world

    yield get
    if snaps:
        prop_world.revert(snaps.pop())


def run_sequence(c: ChainClient, actions: list[tuple[Any, ...]]) -> Driver:
    people = c.backend.accounts[1 : 1 + N_PEOPLE]
    d = Driver(c, people, deposited=c.contract_balance())
    for name, *args in actions:
        getattr(d, name)(*args)
        d.check_step()
    d.check_all()
    return d


_COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@settings(max_examples=200, **_COMMON)
@given(actions=st.lists(ACTIONS, min_size=1, max_size=5))
def test_random_sequences_keep_the_invariants(fresh: Callable[[], ChainClient], actions: list[Any]) -> None:
    run_sequence(fresh(), actions)


SHARDS = 4  # 10,000 sequences in all, 2,500 per shard


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_random_sequences_keep_the_invariants_long(fresh: Callable[[], ChainClient], shard: int) -> None:
    """10,000 sequences of up to 6 actions (a `step` action plays up to 7 round phases), split into
    seeded shards so that several processes can share them (`-k 'long and <backend>-<shard>'`)."""

    done = [0]

    @seed(shard)
    @settings(max_examples=10_000 // SHARDS, **{**_COMMON, "derandomize": False})
    @given(actions=st.lists(ACTIONS, min_size=1, max_size=6))
    def sequences(actions: list[Any]) -> None:
        run_sequence(fresh(), actions)
        done[0] += 1
        if done[0] % 250 == 0:  # progress of a long run (visible with -s)
            print(f"shard {shard}: {done[0]} sequences", flush=True)

    sequences()
