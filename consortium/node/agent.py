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
from pathlib import Path
from typing import Any

from consortium.chain import MIN_ELIGIBLE, ChainClient, Phase, RoundState, Vote, wei
from consortium.config import RunConfig, config_digest
from consortium.local.participant import LocalParticipant
from consortium.node.net import TRANSIENT, NodeError, connect, deployment_of, retry, send, store_options
from consortium.node_config import NodeConfig, NodeState, load_key
from consortium.probe import publish
from consortium.round.availability import reported_missing, reserve, window_open
from consortium.round.chain_view import RoundCandidate, fold_round, played, read_commitments, round_candidate
from consortium.round.history import PublicHistory
from consortium.round.pipeline import rule_from_config
from consortium.round.records import get_vector, put_update, put_vector
from consortium.round.voting import VoteRule, honest_ballot
from consortium.store import open_store

log = logging.getLogger("consortium.node")
MAX_ERRORS = 10  # unexpected failures in a row before the node gives up


class Node:
    """One participant acting on the chain. `participant` is its model, data shard, local training
    and held-out loss (`consortium.local`), built from the run config `cfg`."""

    def __init__(
        self,
        ncfg: NodeConfig,
        cfg: RunConfig,
        participant: LocalParticipant,
        client: ChainClient | None = None,
    ) -> None:
        self.ncfg = ncfg
        self.cfg = cfg
        self.name = ncfg.name
        self.participant = participant
        self.account = load_key(ncfg)
        self.address: str = self.account.address
        self.client = client or retry(lambda: connect(ncfg, self.account), "connect to the chain")
        self.store = open_store(ncfg.store, **store_options(ncfg))
        self.layout = participant.model.layout
        self.rule = rule_from_config(self.cfg)
        if self.rule.probe is not None:  # into the shared store, where every node and the audit read it
            publish(Path(self.cfg.probe.dir or ".") / f"{self.cfg.probe.artifact}.safetensors", self.store)
        self.public = PublicHistory(self.store, self.layout, self.rule)
        self.folded = 0  # rounds below this id are folded into `public`
        self.skipped: frozenset[int] = frozenset()  # rounds removals undid: left out of `public`
        cc = self.cfg.chain
        self.vote_rule = VoteRule(cc.accept_tolerance, cc.flag_loss_margin, cc.base_margin)
        self.digest = config_digest(self.cfg)
        assert ncfg.state_file is not None
        self.state = NodeState(ncfg.state_file, ncfg.contract, self.address, deployment_of(self.client))
        self.views: dict[int, RoundCandidate] = {}
        self.served: dict[str, bytes] = {}  # our committed blob, to put back in the retrieval window
        self.base_loss: float | None = None
        self.finalized: list[int] = []

    # ------------------------------------------------------------------ sending

    def _send(self, what: str, call: Callable[[], Any]) -> bool:
        """Send one transaction (`node.net.send`): True when mined or already done."""
        return send(what, call, self.client, self.address)

    # ------------------------------------------------------------------ set-up

    def ensure_registered(self) -> None:
        """Register with the config's stake, or top a stake slashed below the minimum back up."""
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
            size = len(self.participant.examples)  # declared with the stake: bounds its claimed n
            self._send("register", lambda: self.client.register(want, size))
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

    def check_genesis(self) -> None:
        """Refuse a deployment whose genesis is not this run's initial adapter (which every node derives
        from the config), and put that adapter into the store for everyone who reads it."""
        mine = put_vector(self.store, self.participant.model.initial, self.layout)
        theirs = self.client.history().genesis.hex()
        if theirs != mine:
            raise NodeError(
                f"contract {self.client.contract_address}: genesis {theirs} is not this run's initial "
                f"adapter {mine} (another run config, or a deployment not made for it)"
            )

    def run(self, rounds: int | None = None, max_seconds: float | None = None) -> list[int]:
        """Act round after round until the contract's round `rounds` is over (None: forever). Returns
        the round ids this node saw finalized."""
        retry(self.check_genesis, "check the genesis")
        retry(self.ensure_registered, "register")
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
            self._reserve(rid, info, block)
            self._post_candidate(rid, info, block)
        elif phase == Phase.VOTE_COMMIT:
            self._vote_commit(rid, info.base_hash.hex())
        elif phase == Phase.VOTE_REVEAL:
            self._vote_reveal(rid)
        elif phase == Phase.FINALIZE:
            self._send(f"round {rid}: finalize", self.client.finalize)
        return False

    # ------------------------------------------------------------------ phases

    def _open(self) -> None:
        """Open the next round once a draw is possible (else it would cancel the round); with fewer
        eligible than roles the contract draws fewer roles (`chain.round_shape`). A removal the
        participants approved goes first: the contract opens no round before it is carried out."""
        if self.client.removed(self.address):
            raise NodeError(
                f"account {self.address} was removed from the consortium by a removal its participants "
                "approved (`consortium removal status`); it cannot take part again"
            )
        at = self.client.block_number()  # states at one block, addresses after it: never fewer names
        pending = self.client.pending_removal()
        if pending is not None and pending.supported(*self.client.removal_support(pending, at)):
            what = f"removal {pending.removal_id}: execute (rewind to round {pending.from_round})"
            self._send(what, self.client.execute_removal)
            return
        # the contract's own count: the weight it keeps for the next round is the stake of a participant
        # registered, not exiting and holding at least the minimum, else 0
        eligible = [p for p in self.client.all_participants(at) if p.weight > 0]
        if len(eligible) < MIN_ELIGIBLE:
            return
        base = self.client.global_hash()
        if self.client.round_info().round_id == 0:
            self.check_genesis()  # and the genesis blob into the store, for every voter to read
        self._send(
            f"round {self.client.round_info().round_id + 1}: open", lambda: self.client.open_round(base)
        )

    def _seed_commit(self, rid: int) -> None:
        """Commit a fresh seed once; the chain, not the state file, says whether it is committed (a
        commit a reorg dropped is sent again, with the same seed)."""
        if self.address in self.client.history().round(rid).seed_commits:
            return
        if "seed" not in self.state.round(rid):  # kept before sending, to reveal after a restart
            self.state.update(rid, seed=os.urandom(32).hex())
        seed = bytes.fromhex(self.state.round(rid)["seed"])
        if self._send(f"round {rid}: commit seed", lambda: self.client.commit_seed(rid, seed)):
            self.state.update(rid, seed_sent=True)

    def _seed_reveal(self, rid: int) -> None:
        """Reveal the committed seed while the chain lacks the reveal (a dropped reveal is resent)."""
        st = self.state.round(rid)
        rec = self.client.history().round(rid)
        if "seed" not in st or self.address in rec.seed_reveals or self.address not in rec.seed_commits:
            return  # nothing of ours to reveal, or revealed already
        seed = bytes.fromhex(st["seed"])
        if self._send(f"round {rid}: reveal seed", lambda: self.client.reveal_seed(rid, seed)):
            self.state.update(rid, seed_revealed=True)

    def _role(self, rid: int) -> tuple[int, int]:
        """(kind, status) of this node in round `rid`: kind 1 proposer, 2 voter, 0 none; status bit 1
        committed, bit 2 revealed."""
        me = self.client.participant(self.address)
        return (me.role_kind, me.role_status) if me.role_round == rid else (0, 0)

    def _vote_status(self, rid: int) -> int | None:
        """This node's vote status in round `rid` (bit 1 committed, bit 2 revealed), None when it holds no
        voting seat: a drawn voter's status bits, or a proposer's bits 4 and 8 when proposers vote."""
        kind, status = self._role(rid)
        if kind == 2:
            return status
        if kind == 1 and self.client.params().proposers_vote:
            return status >> 2
        return None

    def _commit(self, rid: int, base: str) -> None:
        kind, status = self._role(rid)
        st = self.state.round(rid)
        if kind != 1 or status & 1:  # the chain says whether our commit stands (a reorg may drop it)
            return
        if "uri" not in st or st["blob"] not in self.store:  # (a restart after training reuses the blob)
            t0 = time.perf_counter()
            start = get_vector(self.store, base, self.layout)
            delta, n = self.participant.train(rid - 1, start)
            blob, uri = put_update(self.store, delta, n, self.layout, self.digest)
            self.served = {blob: self.store.get(blob)}  # to serve again in the retrieval window
            self.state.update(rid, blob=blob, uri=uri)
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

    def _reserve(self, rid: int, info: Any, block: int) -> None:
        """Our half of the retrieval window: put our committed blob back if the store lost or corrupted
        it (`round.availability`; kept from the commit, else read back from the store while it had it)."""
        st = self.state.round(rid)
        if "blob" not in st or not st.get("committed") or not window_open(info.candidate_end, block):
            return
        if st["blob"] not in self.served and st["blob"] in self.store:
            self.served[st["blob"]] = self.store.get(st["blob"])
        if st["blob"] in self.served and reserve(self.store, self.served[st["blob"]]):
            log.warning("round %d: the store had lost our update %s; put it back", rid, st["blob"][:12])

    def _history_before(self, rid: int) -> PublicHistory:
        """The public history as every participant grew it over the rounds before `rid`, folded in
        once each from the chain and the store as the audit does (a restarted node rebuilds it)."""
        hist = self.client.history()
        skip = hist.superseded(rid)
        if skip != self.skipped:  # a removal undid rounds folded in: grow the memory again without them
            self.public = PublicHistory(self.store, self.layout, self.rule)
            self.folded, self.skipped, self.views = 0, skip, {}
        for rec in hist.rounds:
            if rec.round_id < self.folded or rec.round_id >= rid:
                continue
            if rec.outcome is None:  # not final yet: nothing after it can be folded either
                break
            if played(rec) and rec.round_id not in skip:
                rc = self.views.get(rec.round_id) or self._candidate(rec)
                fold_round(self.public, rec, rc)
            self.folded = rec.round_id + 1
        return self.public

    def _candidate(self, rec: Any) -> RoundCandidate:
        rc = read_commitments(rec, self.store, self.layout, reported_missing(rec))  # as the audit reads it
        return round_candidate(self.public, rec, rc, self.cfg.chain.slash_excluded)

    def view(self, rid: int, final: bool = True) -> RoundCandidate:
        """The round's candidate as the pure pipeline computes it from chain + store (cached per round
        once `final`: a blob missing inside the retrieval window is read again at the next block)."""
        if rid in self.views:
            return self.views[rid]
        rec = self.client.history().round(rid)
        self._history_before(rid)
        v = self._candidate(rec)
        if v.error is not None:
            log.warning("round %d: no candidate: %s", rid, v.error)
        if final or not v.committed.unavailable:
            self.views = {rid: v}  # only the current round is needed again
        return v

    def _post_candidate(self, rid: int, info: Any, block: int) -> None:
        """Post the pipeline's candidate unless the chain already holds it (whoever posted it); with a
        committed blob still missing, only once the retrieval window has closed."""
        v = self.view(rid, final=not window_open(info.candidate_end, block))
        if v.committed.unavailable and rid not in self.views:
            missing = len(v.committed.unavailable)
            log.info("round %d: %d committed blob(s) missing; reading again next block", rid, missing)
            return
        if v.hash is None or v.candidate is None:  # nothing committed or nothing readable: voters reject
            return
        if v.hash not in self.store:  # the blob the next round starts from, whoever posted it
            put_vector(self.store, v.candidate.vector, self.layout)
        mine = (bytes.fromhex(v.hash), self.client.flag_mask(v.flagged), self.client.flag_mask(v.excluded))
        if mine in self.client.candidates():
            return
        posted = self._send(
            f"round {rid}: post candidate {v.hash[:12]}",
            lambda: self.client.post_candidate(rid, v.hash or "", v.flagged, v.excluded),
        )
        if posted:
            self.state.update(rid, candidate_posted=True)

    def _vote_commit(self, rid: int, base: str) -> None:
        status = self._vote_status(rid)
        st = self.state.round(rid)
        if status is None or status & 1:  # the chain says whether our vote commitment stands
            return
        if "vote" not in st:
            vote = self._ballot(rid, base)
            saved = {"choice": vote.choice, "flags": vote.flags, "salt": vote.salt.hex()}
            self.state.update(rid, vote=saved | {"missing": vote.missing})
        b = self.state.round(rid)["vote"]
        vote = Vote(b["choice"], b["flags"], bytes.fromhex(b["salt"]), b.get("missing", 0))
        if self._send(f"round {rid}: commit vote", lambda: self.client.commit_vote(rid, vote)):
            self.state.update(rid, vote_sent=True)

    def _ballot(self, rid: int, base: str) -> Vote:
        """Judge the round as every honest voter does (`round.voting.honest_ballot`): vote for the first
        posted candidate that matches this node's own recomputation (hash, flags, exclusions)."""
        v = self.view(rid)
        loss = self.participant.loss()
        if self.vote_rule.base_margin is not None and self.base_loss is None:
            genesis = self.client.history().rounds[0].base_hash.hex()
            self.base_loss = loss(get_vector(self.store, genesis, self.layout))
        start = get_vector(self.store, base, self.layout)
        ballot = honest_ballot(
            v,
            start,
            loss,
            self.vote_rule,
            self.client.candidates(),
            self.client.flag_mask,
            self.client.proposers(),
            self.store,
            self.layout,
            loss_base=self.base_loss,
        )
        verdict = ballot.judgement
        log.info(
            "round %d: judged (loss %.4f -> %s), vote %s, flags %s",
            rid,
            verdict.loss_global,
            "n/a" if verdict.loss_candidate is None else f"{verdict.loss_candidate:.4f}",
            f"candidate {ballot.choice}" if ballot.choice else "reject",
            bin(ballot.flag_mask),
        )
        return Vote(ballot.choice, ballot.flag_mask, os.urandom(32), ballot.missing_mask)

    def _vote_reveal(self, rid: int) -> None:
        status = self._vote_status(rid)
        st = self.state.round(rid)
        if status is None or not status & 1 or status & 2 or "vote" not in st:
            return
        b = st["vote"]
        vote = Vote(b["choice"], b["flags"], bytes.fromhex(b["salt"]), b.get("missing", 0))
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
