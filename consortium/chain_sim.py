"""The decentralised round simulated in one process (`protocol = "chain"`): the contract draws roles,
proposers commit, the pipeline's candidate is posted, voters judge it and vote by commit–reveal,
finalize moves the global hash and credits rewards and slashes.

`ChainRoundRunner` drives every participant's part; the candidate, the ballot and the folding of a
finished round into the public history are `consortium.round`'s, the very code a `consortium node`
and `consortium audit` run. Behaviour per participant:
- honest: trains, commits, posts the pipeline's candidate, votes by `round.voting.honest_ballot`;
- attacker (any attack of `consortium.attacks`): crafts its update; when voting it colludes (below),
  or votes as an honest voter does under `chain.attackers_collude = false`;
- `lazy_voter`: accepts the first candidate without evaluating; `no_show`: takes a role, never acts;
- `colluding_voter` (and every attacker): posts the unscreened FedAvg of the round's updates as a
  second candidate and votes for it, flagging nobody.
Everything the candidate depends on is public: the committed blobs (their URIs carry the claimed
sample counts), the round's seed from the draw, the run config, the earlier rounds' commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from consortium.chain import ChainClient, Outcome, Phase, TxLog, Vote, connect, head, to_eth, wei
from consortium.config import RunConfig, config_digest
from consortium.deploy import config_params
from consortium.protocol import TrainFn, prefetch
from consortium.round.availability import reserve
from consortium.round.chain_view import RoundCandidate, fold_round, read_commitments, round_candidate
from consortium.round.history import PublicHistory
from consortium.round.pipeline import AggregationRule, compute_candidate
from consortium.round.records import (
    Commitment,
    Layout,
    ProtocolError,
    get_vector,
    put_update,
    put_vector,
    seed_int,
)
from consortium.round.voting import LossFn, VoteRule, honest_ballot
from consortium.rundir import HEAD, TXLOG, RunDir
from consortium.store import BlobStore

__all__ = ["ChainRoundReport", "ChainRoundRunner", "deploy_runner", "runner_for"]

HONEST, COLLUDERS, NO_SHOW, LAZY = "honest", "colluding_voter", "no_show", "lazy_voter"


def _secret(kind: str, run_seed: int, round_id: int, name: str) -> bytes:
    """Per-participant seeds and salts, derived so that a simulated run replays bit for bit."""
    return hashlib.sha256(f"{kind}:{run_seed}:{round_id}:{name}".encode()).digest()


@dataclass
class ChainRoundReport:
    """What one simulated contract round did, by participant name: a round of the run's report."""

    round_id: int
    global_in: str
    global_out: str
    outcome: str
    seed: int = 0
    candidate: str | None = None  # the screening pipeline's candidate (hash)
    proposers: list[str] = field(default_factory=list)
    voters: list[str] = field(default_factory=list)
    commitments: list[Commitment] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    votes: dict[str, dict[str, Any]] = field(default_factory=dict)
    judgements: dict[str, dict[str, Any]] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    slashes: list[dict[str, Any]] = field(default_factory=list)
    gas: dict[str, int] = field(default_factory=dict)
    stakes: dict[str, float] = field(default_factory=dict)
    balances: dict[str, float] = field(default_factory=dict)
    defence: dict[str, Any] = field(default_factory=dict)  # the pipeline's flags and weights, by name
    pipeline: Any = None  # the pipeline's Candidate (not in the summary)
    reserved: list[str] = field(default_factory=list)  # proposers who put a lost blob back in the window

    def summary(self) -> dict[str, Any]:
        """JSON-able record, the pipeline's flags/weights/time at the top level as in a fedavg round."""
        skip = ("pipeline", "commitments", "defence") + (() if self.reserved else ("reserved",))
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        out["commitments"] = [c.__dict__ for c in self.commitments]
        return out | self.defence


@dataclass
class ChainRoundRunner:
    """Runs rounds through the contract for every participant of an in-process simulation."""

    operator: ChainClient  # the deployer's view: reads, mining; participants act through `as_account`
    accounts: Mapping[str, str]  # participant name -> address
    strategies: Mapping[str, str]  # participant name -> honest | attack kind | strategy kind
    store: BlobStore
    layout: Layout
    rule: AggregationRule
    vote_rule: VoteRule
    run_seed: int = 0
    config: str = ""  # digest of the run config, named in every commit
    check_updates: bool = True
    attackers: frozenset[str] = frozenset()
    attackers_collude: bool = True  # False: attackers vote honestly, only their updates attack
    slash_excluded: bool = False  # the config's chain.slash_excluded (see `candidate_marks`)
    genesis: str | None = None  # the run's initial adapter (the first round's input), for `base_margin`
    base_losses: dict[str, float] = field(default_factory=dict)  # each voter's loss of the genesis
    gone: frozenset[str] = frozenset()  # removed or exited (a removal's replay): they no longer act

    def __post_init__(self) -> None:
        self.public = PublicHistory(self.store, self.layout, self.rule)  # FoolsGold sums, probe verdicts
        self.names = {a.lower(): n for n, a in self.accounts.items()}
        colluders = {n for n, s in self.strategies.items() if s == COLLUDERS}
        self.coalition = (frozenset(self.attackers if self.attackers_collude else ()) | colluders) - self.gone
        self.active = [n for n in self.accounts if n not in self.gone]  # registration order

    # ---------------------------------------------------------------- set-up

    def register_all(self, stake: float, data_sizes: Mapping[str, int] | None = None) -> None:
        """Every participant registers with its stake and its number of training examples (once, before
        the first round)."""
        for name, addr in self.accounts.items():
            self.operator.as_account(addr).register(wei(stake), (data_sizes or {}).get(name, 0))

    def _client(self, name: str) -> ChainClient:
        return self.operator.as_account(self.accounts[name])

    def _name(self, address: str) -> str:
        return self.names.get(address.lower(), address)

    # ---------------------------------------------------------------- one round

    def run_round(
        self, global_hash: str, train: TrainFn, loss_of: Callable[[str], LossFn]
    ) -> ChainRoundReport:
        """Open, seed, draw, train+commit, post, vote, finalize. `loss_of(voter)` is that voter's
        held-out loss of an adapter vector."""
        gas: dict[str, int] = {}
        self.genesis = self.genesis or global_hash

        def sent(tx: Any) -> Any:
            gas[tx.function] = gas.get(tx.function, 0) + tx.gas_used
            return tx

        op = self._client(min(self.active))  # opening needs a registered participant; any will do
        sent(op.open_round(global_hash))
        info = op.round_info()
        rid = info.round_id
        for name in self.active:  # optional entropy: everyone commits (in round 1; later rounds'
            # commitments ride on the previous reveal), then reveals a seed
            if self._client(name).precommitted_seed(rid) is None:
                sent(self._client(name).commit_seed(rid, _secret("seed", self.run_seed, rid, name)))
        op.advance_to_phase(Phase.SEED_REVEAL, info)
        for name in self.active:
            nxt = _secret("seed", self.run_seed, rid + 1, name)
            sent(self._client(name).reveal_seed(rid, next_seed=nxt))
        op.advance_to_phase(Phase.DRAW, info)
        sent(op.draw())
        rec = op.history().round(rid)
        out = ChainRoundReport(rid, global_hash, global_hash, "", gas=gas)
        if rec.outcome == Outcome.CANCELLED:
            out.outcome = Outcome.CANCELLED.name.lower()
            self._finish(out)
            return out
        out.seed = seed_int(rec.seed or b"")
        out.proposers = [self._name(a) for a in rec.proposers]
        out.voters = [self._name(a) for a in rec.voters]

        start = get_vector(self.store, global_hash, self.layout)
        prefetch(train, [n for n in out.proposers if self.strategies.get(n) != NO_SHOW], start)
        served: dict[str, bytes] = {}  # what each proposer keeps of its committed blob, to serve again
        for name in out.proposers:
            if self.strategies.get(name) == NO_SHOW:
                continue
            delta, n = train(name, start)
            blob, uri = put_update(self.store, delta, n, self.layout, self.config)
            served[name] = self.store.get(blob)
            sent(self._client(name).commit(rid, blob, uri))
            out.commitments.append(Commitment(name, blob, n))

        op.advance_to_phase(Phase.CANDIDATE)
        self.retrieval_window(out, served)
        rc = self.candidate(op.history().round(rid))
        coalition_hash = self._post_candidates(rid, out, rc, sent)

        op.advance_to_phase(Phase.VOTE_COMMIT)
        posted = op.candidates()
        for name in out.voters:
            vote = self._ballot(name, rid, out, rc, coalition_hash, start, loss_of, posted)
            if vote is not None:
                sent(self._client(name).commit_vote(rid, vote))
        op.advance_to_phase(Phase.VOTE_REVEAL)
        for name in out.voters:
            if name in out.votes:
                sent(self._client(name).reveal_vote(rid))
        op.advance_to_phase(Phase.FINALIZE)
        sent(op.finalize())
        self._record_outcome(out)
        fold_round(self.public, op.history().round(rid), rc)
        self._finish(out)
        return out

    def retrieval_window(self, out: ChainRoundReport, served: dict[str, bytes]) -> None:
        """The window before anyone judges availability: each proposer puts its blob back if the store lost
        or corrupted it (`round.availability.reserve`). The store is one for all here: what is missing after
        it is missing to every voter, who each report it (`Ballot.missing_mask`)."""
        out.reserved += [name for name, data in served.items() if reserve(self.store, data)]

    def candidate(self, rec: Any) -> RoundCandidate:
        """The round's candidate as every node and the audit compute it from the chain record and the
        store (`consortium.round.chain_view`): a committed blob that is missing, corrupt or not an
        update of this adapter counts as a no-show, left out and flagged."""
        committed = read_commitments(rec, self.store, self.layout)
        return round_candidate(self.public, rec, committed, self.slash_excluded)

    def _post_candidates(
        self, rid: int, out: ChainRoundReport, rc: RoundCandidate, sent: Callable[[Any], Any]
    ) -> str | None:
        """The pipeline's candidate, posted by an honest participant; the coalition's unscreened one
        too when an attacker's update is in the round. Returns the coalition's candidate hash."""
        if not out.commitments:
            return None
        out.pipeline = rc.candidate
        unavailable = [self._name(a) for a in rc.committed.invalid]
        if rc.candidate is None:  # every committed blob unavailable: nothing to post, voters reject
            names = sorted(self._name(a) for a in rc.flagged)
            out.defence = {"flagged": names, "excluded": [], "unavailable": unavailable}
            if rc.error is not None:
                out.defence["error"] = rc.error
            return None
        pipeline = rc.candidate
        flagged = sorted(self._name(a) for a in rc.flagged)
        excluded = sorted(self._name(a) for a in rc.excluded)
        out.defence = {
            "flagged": flagged,
            "excluded": excluded,
            "unavailable": unavailable,
            "weights": {self._name(a): w for a, w in pipeline.summary()["weights"].items()},
            "defense_seconds": pipeline.seconds,
            "info": pipeline.result.info,
        }
        honest_hash = out.candidate = put_vector(self.store, pipeline.vector, self.layout)
        poster = next(
            (n for n, s in sorted(self.strategies.items()) if s == HONEST and n in self.active), None
        )
        if poster is not None:
            sent(self._client(poster).post_candidate(rid, honest_hash, rc.flagged, rc.excluded))
            out.candidates.append(
                {"poster": poster, "hash": honest_hash, "flagged": flagged, "excluded": excluded}
            )
        coalition_hash = None
        if self.coalition and any(c.participant in self.attackers for c in out.commitments):
            unscreened_params = replace(self.rule.params, screen_min_norm=0.0, screen_stale_cosine=2.0)
            plain = replace(self.rule, aggregator="fedavg", params=unscreened_params, dp=None, probe=None)
            keyed = rc.committed.commitments
            unscreened = compute_candidate(self.store, self.layout, out.global_in, keyed, plain)
            coalition_hash = put_vector(self.store, unscreened.vector, self.layout)
            if coalition_hash != honest_hash:
                colluder = sorted(self.coalition)[0]
                sent(self._client(colluder).post_candidate(rid, coalition_hash, []))
                out.candidates.append(
                    {"poster": colluder, "hash": coalition_hash, "flagged": [], "excluded": []}
                )
        for number, cand in enumerate(out.candidates, start=1):
            cand["number"] = number
        return coalition_hash

    def _ballot(
        self,
        name: str,
        rid: int,
        out: ChainRoundReport,
        rc: RoundCandidate,
        coalition_hash: str | None,
        start: torch.Tensor,
        loss_of: Callable[[str], LossFn],
        posted: Sequence[tuple[bytes, int, int]],
    ) -> Vote | None:
        """This voter's ballot by its strategy (None: it does not vote); an honest one is the node's
        (`consortium.round.voting.honest_ballot`)."""
        strategy = self.strategies.get(name, HONEST)
        salt = _secret("salt", self.run_seed, rid, name)
        numbers = {c["hash"]: c["number"] for c in out.candidates}
        if strategy == NO_SHOW:
            return None
        if name in self.coalition or strategy == LAZY:
            choice = 1 if out.candidates else 0
            if name in self.coalition:
                choice = numbers.get(coalition_hash or "", choice)
            out.votes[name] = {"choice": choice, "flags": []}
            return Vote(choice, 0, salt)
        loss = loss_of(name)
        if self.vote_rule.base_margin is not None and self.genesis and name not in self.base_losses:
            self.base_losses[name] = loss(get_vector(self.store, self.genesis, self.layout))
        proposers = [self.accounts[p] for p in out.proposers]
        ballot = honest_ballot(
            rc,
            start,
            loss,
            self.vote_rule,
            posted,
            self.operator.flag_mask,
            proposers,
            self.store,
            self.layout,
            loss_base=self.base_losses.get(name),
            check_updates=self.check_updates,
        )
        verdict = ballot.judgement
        out.judgements[name] = {
            "accept": verdict.accept,
            "loss_global": verdict.loss_global,
            "loss_candidate": verdict.loss_candidate,
            "loss_base": self.base_losses.get(name),
            "reasons": {self._name(a): why for a, why in verdict.reasons.items()},
        }
        drawn = {a.lower() for a in proposers}
        flags = sorted(self._name(a) for a in verdict.flags if a.lower() in drawn)
        missing = sorted(self._name(a) for a in rc.committed.unavailable if a.lower() in drawn)
        out.votes[name] = {"choice": ballot.choice, "flags": flags}
        if missing:
            out.votes[name]["missing"] = missing
        return Vote(ballot.choice, ballot.flag_mask, salt, ballot.missing_mask)

    def summary(self, cfg: RunConfig, rd: RunDir) -> dict[str, Any]:
        """The chain section of the report: where it ran, who played what, and the head to audit
        against (also written to `chain/head.json`)."""
        op = self.operator
        chain_head = head(op.w3)
        rd.write_json(HEAD, {"contract": op.contract_address, **chain_head})
        return {
            "backend": op.backend.kind,
            "stake": cfg.chain.stake,
            "contract": op.contract_address,
            "params": op.params().__dict__,
            "accounts": dict(self.accounts),
            "strategies": dict(self.strategies),
            "coalition": sorted(self.coalition),
            "head": chain_head,
        }

    def _record_outcome(self, out: ChainRoundReport) -> None:
        rec = self.operator.history().round(out.round_id)
        # REJECTED is 0: test for None, not for truth
        out.outcome = (rec.outcome if rec.outcome is not None else Outcome.NO_QUORUM).name.lower()
        if rec.outcome == Outcome.ACCEPTED and rec.global_hash is not None:
            out.global_out = rec.global_hash.hex()
        out.rewards = {self._name(a): to_eth(v) for a, v in rec.rewards.items()}
        out.slashes = [
            {"who": self._name(a), "eth": to_eth(v), "reason": r.name.lower()} for a, v, r in rec.slashes
        ]

    def _finish(self, out: ChainRoundReport) -> None:
        for p in self.operator.all_participants():
            name = self._name(p.address)
            out.stakes[name], out.balances[name] = to_eth(p.stake), to_eth(p.balance)


def deploy_runner(
    cfg: RunConfig,
    rd: RunDir,
    store: BlobStore,
    layout: Layout,
    rule: AggregationRule,
    genesis: str,
    strategies: Mapping[str, str],
    attackers: frozenset[str],
    data_sizes: Mapping[str, int] | None = None,
) -> ChainRoundRunner:
    """Deploy the contract (embedded EVM unless `chain.rpc_url`); every participant (`strategies`' keys,
    in order) registers and stakes. Every transaction goes to `chain/txlog.jsonl`, from which `audit`
    replays the embedded chain."""
    cc = cfg.chain
    backend = connect(cc.rpc_url, n_accounts=cfg.participants + 1, seed=cfg.seed)
    if len(backend.accounts) < cfg.participants + 1:
        raise ProtocolError(
            f"chain.rpc_url: the node has {len(backend.accounts)} unlocked accounts, "
            f"{cfg.participants + 1} are needed (one per participant plus the deployer)"
        )
    (rd.path / "chain").mkdir(exist_ok=True)
    txlog = TxLog(rd.path / TXLOG)
    operator = ChainClient.deploy(
        backend, config_params(cfg), genesis_hash=genesis, fund=wei(cc.reward_pool), txlog=txlog
    )
    accounts = {name: backend.accounts[i + 1] for i, name in enumerate(strategies)}
    runner = runner_for(cfg, operator, accounts, store, layout, rule, strategies, attackers)
    runner.register_all(cc.stake, data_sizes)
    return runner


def runner_for(
    cfg: RunConfig,
    operator: ChainClient,
    accounts: Mapping[str, str],
    store: BlobStore,
    layout: Layout,
    rule: AggregationRule,
    strategies: Mapping[str, str],
    attackers: frozenset[str],
    gone: frozenset[str] = frozenset(),
    genesis: str | None = None,
) -> ChainRoundRunner:
    """The runner of the run config `cfg` on a deployment (`operator`: the deployer's view)."""
    cc = cfg.chain
    return ChainRoundRunner(
        operator,
        dict(accounts),
        dict(strategies),
        store,
        layout,
        rule,
        VoteRule(cc.accept_tolerance, cc.flag_loss_margin, cc.base_margin),
        run_seed=cfg.seed,
        config=config_digest(cfg),
        attackers=attackers,
        attackers_collude=cc.attackers_collude,
        slash_excluded=cc.slash_excluded,
        genesis=genesis,
        gone=gone,
    )
