"""`consortium node`: one organisation's participant, acting for itself on a shared chain and blob store.

The node polls the contract (round state and block number) and does what the current phase asks of it:
open a round when none is running, commit and reveal a seed, call `draw`, train and commit when drawn as
a proposer, post the pipeline's candidate (every honest node may; a duplicate is success), judge and
vote by commit-reveal when drawn as a voter, call `finalize`. Everything it computes comes from public
records (chain events, store blobs, the run config), exactly as `consortium audit` recomputes it.

Restartable: what it is about to commit is written to its state file first (`NodeState`), and every
step checks the chain before acting, so a restart resumes where it stopped and a transaction already
mined is "done", not repeated. RPC and store outages are retried with backoff; a problem the node cannot
fix itself (not enough ETH for gas or stake, a wrong key or contract) stops it with a clear message.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import torch
from web3.exceptions import Web3RPCError

from consortium.chain import ChainClient, ChainError, Outcome, Phase, RoundState, RpcBackend, Vote
from consortium.config import RunConfig, config_digest
from consortium.node_config import NodeConfig, NodeState, load_key
from consortium.protocol import (
    Candidate,
    Commitment,
    ProtocolError,
    get_vector,
    put_vector,
)
from consortium.public_history import PublicHistory
from consortium.store import BlobNotFound, IntegrityError, StoreUnavailable, open_store
from consortium.voting import VoteRule, judge

__all__ = ["Node", "NodeError"]

log = logging.getLogger("consortium.node")
# reverts that mean "someone (maybe we, before a restart) already did it": success, not failure
ALREADY = (
    "round in progress",
    "no round to draw",
    "no round to finalize",
    "already committed",
    "already revealed",
    "duplicate candidate",
    "already registered",
)
MAX_ERRORS = 10  # unexpected failures in a row before the node gives up
TRANSIENT = (requests.ConnectionError, requests.Timeout, StoreUnavailable, ConnectionError, TimeoutError)


class NodeError(RuntimeError):
    """A problem the node cannot fix by waiting: it stops with this message."""


@dataclass
class RoundView:
    """This node's recomputation of a round's candidate from public records."""

    round_id: int
    base: str
    commitments: list[Commitment]  # available ones, keyed by proposer address, in commit order
    unavailable: list[str]
    candidate: Candidate | None
    flagged: list[str] = field(default_factory=list)  # addresses
    excluded: list[str] = field(default_factory=list)
    hash: str | None = None


class Node:
    """One participant. `sim` provides the model, this node's data shard, training and held-out loss
    (a `consortium.sim.Simulation` built from the run config, so the node trains exactly as the sim's
    participant of the same index)."""

    def __init__(self, ncfg: NodeConfig, sim: Any, client: ChainClient | None = None) -> None:
        self.ncfg = ncfg
        self.sim = sim
        self.cfg: RunConfig = sim.cfg
        self.name = ncfg.name
        self.participant = sim.participants[ncfg.participant_index]
        self.account = load_key(ncfg)
        self.address: str = self.account.address
        self.client = client or _retry(lambda: _connect(ncfg, self.account), "connect to the chain")
        self.store = open_store(ncfg.store)
        self.layout = sim.layout
        from consortium.protocol import rule_from_config

        self.rule = rule_from_config(self.cfg)
        if self.rule.probe is not None:  # into the shared store, where every node and the audit read it
            from consortium.probe import publish

            publish(Path(self.cfg.probe.dir or ".") / f"{self.cfg.probe.artifact}.safetensors", self.store)
        self.public = PublicHistory(self.store, self.layout, self.rule)
        self.folded = 0  # rounds below this id are folded into `public`
        cc = self.cfg.chain
        self.vote_rule = VoteRule(cc.accept_tolerance, cc.flag_loss_margin, cc.base_margin)
        self.digest = config_digest(self.cfg)
        assert ncfg.state_file is not None
        self.state = NodeState(ncfg.state_file, ncfg.contract, self.address)
        self.views: dict[int, RoundView] = {}
        self.base_loss: float | None = None
        self.finalized: list[int] = []

    # ------------------------------------------------------------------ sending

    def _send(self, what: str, call: Callable[[], Any]) -> bool:
        """Send one transaction. True: it was mined, or the chain says it is already done. False: the
        window has passed or the contract refused for a reason logged here. Gas/funds: NodeError."""
        try:
            tx = call()
        except ChainError as e:
            if any(a in e.reason for a in ALREADY):
                log.info("%s: already done (%s)", what, e.reason)
                return True
            if e.reason in ("not registered", "stake below minimum"):
                raise NodeError(
                    f"{what}: the contract refused: {e.reason} (account {self.address})"
                ) from None
            log.warning("%s: refused by the contract: %s", what, e.reason)
            return False
        except (ValueError, Web3RPCError) as e:  # node-side refusals: funds, gas, nonce
            text = str(e)
            if any(w in text.lower() for w in ("insufficient funds", "gas required exceeds", "out of gas")):
                bal = self.client.w3.eth.get_balance(self.address) / 10**18
                raise NodeError(
                    f"{what}: account {self.address} cannot pay for gas ({bal:.6f} ETH); fund it: {text}"
                ) from None
            raise
        log.info("%s: mined in block %d (gas %d)", what, tx.block, tx.gas_used)
        return True

    # ------------------------------------------------------------------ set-up

    def ensure_registered(self) -> None:
        """Register with the config's stake, or top a stake slashed below the minimum back up."""
        from consortium.decentral import wei

        me = self.client.participant(self.address)
        params = self.client.params()
        want = wei(self.cfg.chain.stake)
        balance = self.client.w3.eth.get_balance(self.address)
        if not me.registered:
            if balance < want:
                raise NodeError(
                    f"account {self.address} holds {balance / 1e18:.4f} ETH; registering needs the stake "
                    f"{want / 1e18:.4f} ETH plus gas (chain.stake in {self.ncfg.run_config})"
                )
            self._send("register", lambda: self.client.register(want))
            return
        if me.stake < params.min_stake:
            need = want - me.stake
            if balance < need:
                raise NodeError(
                    f"under-staked: stake {me.stake / 1e18:.4f} ETH is below min_stake "
                    f"{params.min_stake / 1e18:.4f} ETH, so this node is not drawn; topping up to "
                    f"{want / 1e18:.4f} ETH needs {need / 1e18:.4f} ETH, the account holds "
                    f"{balance / 1e18:.4f}"
                )
            log.warning("stake %.4f ETH below min_stake: topping up %.4f ETH", me.stake / 1e18, need / 1e18)
            self._send("top_up", lambda: self.client.top_up(need))

    # ------------------------------------------------------------------ the loop

    def run(self, rounds: int | None = None, max_seconds: float | None = None) -> list[int]:
        """Act round after round until the contract's round `rounds` is over (None: forever). Returns
        the round ids this node saw finalized."""
        _retry(self.ensure_registered, "register")
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        failures = errors = 0
        while True:
            try:
                if self.step(rounds):
                    return self.finalized
                failures = errors = 0
            except TRANSIENT as e:
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), 15.0)
                log.warning("unreachable (%s: %s); retrying in %.1fs", type(e).__name__, e, delay)
                time.sleep(delay)
                continue
            except (NodeError, KeyboardInterrupt):
                raise
            except Exception as e:  # a daemon keeps going: the next poll re-reads the chain
                errors += 1
                if errors >= MAX_ERRORS:
                    raise NodeError(f"{errors} failures in a row, the last: {type(e).__name__}: {e}") from e
                log.exception("unexpected %s; retrying", type(e).__name__)
                time.sleep(min(0.5 * 2 ** (errors - 1), 15.0))
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise NodeError(f"gave up after {max_seconds}s")
            time.sleep(self.ncfg.poll_seconds)

    def step(self, rounds: int | None = None) -> bool:
        """Look at the chain once and do what is due. True when the node is done."""
        info = self.client.round_info()
        block = self.client.block_number()
        rid = info.round_id
        if info.state == RoundState.IDLE:
            if rid and rid not in self.finalized:
                self._finished(rid)
            if rounds is not None and rid >= rounds:
                return True
            self._open()
            return False
        phase = info.phase(block + 1)  # our transaction lands in the next block at the earliest
        if phase == Phase.SEED_COMMIT:
            self._seed_commit(rid)
        elif phase == Phase.SEED_REVEAL:
            self._seed_reveal(rid)
        elif phase == Phase.DRAW:
            self._send(f"round {rid}: draw", self.client.draw)
        elif phase == Phase.COMMIT:
            self._commit(rid, info.base_hash.hex())
        elif phase == Phase.CANDIDATE:
            self._post_candidate(rid)
        elif phase == Phase.VOTE_COMMIT:
            self._vote_commit(rid, info.base_hash.hex())
        elif phase == Phase.VOTE_REVEAL:
            self._vote_reveal(rid)
        elif phase == Phase.FINALIZE:
            self._send(f"round {rid}: finalize", self.client.finalize)
        return False

    # ------------------------------------------------------------------ phases

    def _open(self) -> None:
        """Open the next round once enough participants can be drawn (else the draw would cancel it)."""
        params = self.client.params()
        at = self.client.block_number()  # states at one block, addresses after it: never fewer names
        everyone = self.client.all_participants(at)
        eligible = [p for p in everyone if p.registered and p.stake >= params.min_stake]
        if len(eligible) < params.n_proposers + params.n_voters:
            return
        base = self.client.global_hash()
        if base == b"\x00" * 32:  # first round: the run's initial adapter, which every node derives
            genesis = put_vector(self.store, self.sim.initial, self.layout)
            base = bytes.fromhex(genesis)
        self._send(
            f"round {self.client.round_info().round_id + 1}: open", lambda: self.client.open_round(base)
        )

    def _seed_commit(self, rid: int) -> None:
        st = self.state.round(rid)
        if st.get("seed_sent"):
            return
        if "seed" not in st:
            self.state.update(
                rid, seed=os.urandom(32).hex()
            )  # kept before sending, to reveal after a restart
        seed = bytes.fromhex(self.state.round(rid)["seed"])
        if self._send(f"round {rid}: commit seed", lambda: self.client.commit_seed(rid, seed)):
            self.state.update(rid, seed_sent=True)

    def _seed_reveal(self, rid: int) -> None:
        st = self.state.round(rid)
        if "seed" not in st or st.get("seed_revealed"):
            return
        if not st.get("seed_sent"):  # killed between saving the seed and sending it: maybe it went out
            rec = self.client.history().round(rid)
            if self.address not in rec.seed_commits:
                self.state.update(rid, seed_revealed=True)  # nothing to reveal
                return
        seed = bytes.fromhex(st["seed"])
        ok = self._send(f"round {rid}: reveal seed", lambda: self.client.reveal_seed(rid, seed))
        if ok or self._reason_final(rid):
            self.state.update(rid, seed_revealed=True)

    def _reason_final(self, rid: int) -> bool:
        """After a refused reveal: stop retrying once the chain has moved past the seed phase."""
        return self.client.round_info().state != RoundState.SEEDING

    def _role(self, rid: int) -> tuple[int, int]:
        """(kind, status) of this node in round `rid`: kind 1 proposer, 2 voter, 0 none; status bit 1
        committed, bit 2 revealed."""
        me = self.client.participant(self.address)
        return (me.role_kind, me.role_status) if me.role_round == rid else (0, 0)

    def _commit(self, rid: int, base: str) -> None:
        kind, status = self._role(rid)
        st = self.state.round(rid)
        if kind != 1 or status & 1 or st.get("committed"):
            return
        if "uri" not in st or st["blob"] not in self.store:  # (a restart after training reuses the blob)
            t0 = time.perf_counter()
            start = get_vector(self.store, base, self.layout)
            last_step = self._history_before(rid).last_step
            train = self.sim.train_fn(rid - 1, last_step)
            delta, n = train(self.name, start)
            blob = put_vector(self.store, delta, self.layout)
            from consortium.decentral import commit_uri

            self.state.update(rid, blob=blob, uri=commit_uri(blob, n, self.digest))
            log.info(
                "round %d: trained on %d examples in %.1fs, update %s",
                rid,
                n,
                time.perf_counter() - t0,
                blob[:12],
            )
        st = self.state.round(rid)
        if self._send(f"round {rid}: commit update", lambda: self.client.commit(rid, st["blob"], st["uri"])):
            self.state.update(rid, committed=True)

    def _history_before(self, rid: int) -> PublicHistory:
        """The public history as every participant grew it over the rounds before `rid`, folded in
        once each from the chain and the store as the audit does (a restarted node rebuilds it)."""
        from consortium.decentral import seed_int

        for rec in self.client.history().rounds:
            if rec.round_id < self.folded or rec.round_id >= rid:
                continue
            if rec.outcome is None:  # not final yet: nothing after it can be folded either
                break
            if rec.outcome != Outcome.CANCELLED and rec.seed is not None:
                commitments, _ = self._commitments(rec)
                if commitments:
                    seen = self.views.get(rec.round_id)
                    cand = seen.candidate if seen is not None else None
                    if cand is None:
                        try:
                            cand = self.public.compute(rec.base_hash.hex(), commitments, seed_int(rec.seed))
                        except (ProtocolError, BlobNotFound, IntegrityError, ValueError):
                            cand = None  # the audit reports such a round; its updates are history still
                    self.public.grow(commitments, cand)
                if rec.outcome == Outcome.ACCEPTED and rec.global_hash is not None:
                    self.public.moved(rec.base_hash.hex(), rec.global_hash.hex())
            self.folded = rec.round_id + 1
        return self.public

    def _commitments(self, rec: Any) -> tuple[list[Commitment] | None, list[str]]:
        """A round's commitments in commit order, keyed by address (None when a URI is malformed, as the
        audit treats it), and the proposers whose blob is missing or corrupt (no-shows, flagged)."""
        from consortium.decentral import parse_uri

        out: list[Commitment] = []
        unavailable: list[str] = []
        ok = True
        for addr, c in rec.commits.items():
            try:
                blob, n, _ = parse_uri(c.uri)
            except ProtocolError:
                ok = False
                continue
            if blob != c.update_hash.hex():
                ok = False
                continue
            try:
                self.store.get(blob)  # StoreUnavailable propagates: an outage is not a no-show
            except (BlobNotFound, IntegrityError):
                unavailable.append(addr)
                continue
            out.append(Commitment(addr, blob, n))
        return (out if ok else None), unavailable

    def view(self, rid: int) -> RoundView:
        """The round's candidate as the pure pipeline computes it from chain + store (cached per round)."""
        if rid in self.views:
            return self.views[rid]
        from consortium.decentral import candidate_marks, seed_int

        rec = self.client.history().round(rid)
        public = self._history_before(rid)
        commitments, unavailable = self._commitments(rec)
        v = RoundView(rid, rec.base_hash.hex(), commitments or [], unavailable, None)
        if commitments:
            v.candidate = public.compute(v.base, commitments, seed_int(rec.seed or b""))
            v.flagged, v.excluded = candidate_marks(v.candidate, unavailable, self.cfg.chain.slash_excluded)
            v.hash = put_vector(self.store, v.candidate.vector, self.layout)
        self.views = {rid: v}  # only the current round is needed again
        return v

    def _post_candidate(self, rid: int) -> None:
        st = self.state.round(rid)
        if st.get("candidate_posted"):
            return
        v = self.view(rid)
        if v.hash is None:  # nothing committed, or every blob unavailable: voters reject
            self.state.update(rid, candidate_posted=True)
            return
        mine = (bytes.fromhex(v.hash), self.client.flag_mask(v.flagged), self.client.flag_mask(v.excluded))
        if mine in self.client.candidates():
            log.info("round %d: candidate %s already posted", rid, v.hash[:12])
            self.state.update(rid, candidate_posted=True)
            return
        posted = self._send(
            f"round {rid}: post candidate {v.hash[:12]}",
            lambda: self.client.post_candidate(rid, v.hash or "", v.flagged, v.excluded),
        )
        if posted:
            self.state.update(rid, candidate_posted=True)

    def _vote_commit(self, rid: int, base: str) -> None:
        kind, status = self._role(rid)
        st = self.state.round(rid)
        if kind != 2 or status & 1 or st.get("vote_sent"):
            return
        if "vote" not in st:
            vote = self._ballot(rid, base)
            self.state.update(rid, vote={"choice": vote.choice, "flags": vote.flags, "salt": vote.salt.hex()})
        b = self.state.round(rid)["vote"]
        vote = Vote(b["choice"], b["flags"], bytes.fromhex(b["salt"]))
        if self._send(f"round {rid}: commit vote", lambda: self.client.commit_vote(rid, vote)):
            self.state.update(rid, vote_sent=True)

    def _ballot(self, rid: int, base: str) -> Vote:
        """Judge the round as `voting.judge` does for an honest voter of the sim; vote for the first
        posted candidate that matches this node's own recomputation (hash, flags, exclusions)."""
        v = self.view(rid)
        loss = self.sim._loss_fn(self.participant.name)
        if self.vote_rule.base_margin is not None and self.base_loss is None:
            genesis = self.client.history().rounds[0].base_hash.hex()
            self.base_loss = loss(get_vector(self.store, genesis, self.layout))
        start = get_vector(self.store, base, self.layout)
        updates = {c.participant: get_vector(self.store, c.blob, self.layout) for c in v.commitments}
        verdict = judge(
            None if v.candidate is None else v.candidate.vector,
            start,
            updates,
            v.flagged,
            loss,
            self.vote_rule,
            loss_base=self.base_loss,
        )
        choice = 0
        if verdict.accept and v.hash is not None:
            mine = (
                bytes.fromhex(v.hash),
                self.client.flag_mask(v.flagged),
                self.client.flag_mask(v.excluded),
            )
            choice = next((k + 1 for k, c in enumerate(self.client.candidates()) if c == mine), 0)
        proposers = {a.lower() for a in self.client.proposers()}
        mask = self.client.flag_mask([p for p in verdict.flags if p.lower() in proposers])
        log.info(
            "round %d: judged (loss %.4f -> %s), vote %s, flags %s",
            rid,
            verdict.loss_global,
            "n/a" if verdict.loss_candidate is None else f"{verdict.loss_candidate:.4f}",
            f"candidate {choice}" if choice else "reject",
            bin(mask),
        )
        return Vote(choice, mask, os.urandom(32))

    def _vote_reveal(self, rid: int) -> None:
        kind, status = self._role(rid)
        st = self.state.round(rid)
        if kind != 2 or not status & 1 or status & 2 or "vote" not in st:
            return
        b = st["vote"]
        vote = Vote(b["choice"], b["flags"], bytes.fromhex(b["salt"]))
        self._send(f"round {rid}: reveal vote", lambda: self.client.reveal_vote(rid, vote))

    def _finished(self, rid: int) -> None:
        rec = self.client.history().round(rid)
        self.finalized.append(rid)
        outcome = "open" if rec.outcome is None else rec.outcome.name.lower()
        mine = [f"{r.name.lower()} {v / 1e18:.4f} ETH" for a, v, r in rec.slashes if a == self.address]
        reward = rec.rewards.get(self.address, 0) / 1e18
        log.info(
            "round %d finalized: %s, global %s; reward %.4f ETH%s",
            rid,
            outcome,
            (rec.global_hash or rec.base_hash).hex()[:12],
            reward,
            f", slashed {', '.join(mine)}" if mine else "",
        )


def _connect(ncfg: NodeConfig, account: Any) -> ChainClient:
    backend = RpcBackend(ncfg.rpc_url, dev=ncfg.dev_chain)
    if not backend.w3.eth.get_code(ncfg.contract):
        raise NodeError(f"no contract at {ncfg.contract} on {ncfg.rpc_url} (wrong address or chain?)")
    client = ChainClient.at(backend, ncfg.contract, account)
    client.params()
    return client


def _retry(fn: Callable[[], Any], what: str, attempts: int = 8, base: float = 0.5) -> Any:
    """Call `fn`, retrying transient network errors with exponential backoff (`base` seconds, doubling
    to 15 s); NodeError naming `what` after the last attempt."""
    for attempt in range(attempts):
        try:
            return fn()
        except TRANSIENT as e:
            if attempt == attempts - 1:
                raise NodeError(f"{what}: still unreachable after {attempts} attempts: {e}") from None
            delay = min(base * 2**attempt, 15.0)
            log.warning("%s: unreachable (%s); retrying in %.1fs", what, type(e).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def make_node(ncfg: NodeConfig) -> Node:
    """Build the model and this node's data from the run config (as the sim builds participant
    `participant_index`, or from `data_jsonl`), then connect. Raises NodeConfigError / NodeError."""
    from rich.console import Console

    from consortium.audit import AuditInputError, load_run_config
    from consortium.node_config import NodeConfigError
    from consortium.sim import Simulation, _split_file

    torch.set_num_threads(1)
    assert ncfg.run_config is not None
    try:
        cfg = load_run_config(ncfg.run_config)
    except AuditInputError as e:
        raise NodeConfigError(f"run_config: {e}") from None
    if cfg.protocol != "chain":
        raise NodeConfigError(f"{ncfg.run_config}: protocol is {cfg.protocol!r}; a node needs 'chain'")
    if ncfg.participant_index >= cfg.participants:
        raise NodeConfigError(
            f"participant_index {ncfg.participant_index}: the run config has {cfg.participants} participants"
        )
    load_key(ncfg)  # a bad key fails before the model is loaded
    sim = Simulation(cfg, Console(quiet=True))
    if ncfg.data_jsonl is not None:
        from consortium.data import load_jsonl

        rows = load_jsonl(ncfg.data_jsonl, domain=ncfg.data_jsonl.stem)
        if len(rows) < 2:
            raise NodeConfigError(f"data_jsonl {ncfg.data_jsonl}: needs at least 2 examples, has {len(rows)}")
        p = sim.participants[ncfg.participant_index]
        train, holdout = _split_file(rows, cfg.chain.holdout_fraction, cfg.seed + ncfg.participant_index)
        p.examples, p.encoded, p.holdout = train, sim._encode(train), sim._encode(holdout)
    return Node(ncfg, sim)
