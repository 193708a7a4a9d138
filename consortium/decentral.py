"""The decentralised round: the contract draws roles, proposers commit, the pipeline's candidate is posted,
voters judge it and vote by commit–reveal, finalize moves the global hash and credits rewards and slashes.

`ChainRoundRunner` drives every participant's part from one process (the in-process simulation); each
step is a method a real node calls for itself. Behaviour per participant:
- honest: trains, commits, posts the pipeline's candidate, votes by `voting.judge`;
- attacker (any attack of `consortium.attacks`): crafts its update; when voting it colludes (below);
- `lazy_voter`: accepts the first candidate without evaluating; `no_show`: takes a role, never acts;
- `colluding_voter` (and every attacker): posts the unscreened FedAvg of the round's updates as a
  second candidate and votes for it, flagging nobody.
Everything the candidate depends on is public: the committed blobs (their URIs carry the claimed
sample counts), the round's seed from the draw, the run config, the earlier rounds' commits.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from consortium.attacks import attackers_for
from consortium.chain import ChainClient, Outcome, Params, Phase, Vote
from consortium.protocol import (
    AggregationRule,
    Candidate,
    Commitment,
    Layout,
    ProtocolError,
    TrainFn,
    compute_candidate,
    get_vector,
    prefetch,
    put_vector,
)
from consortium.public_history import PublicHistory
from consortium.store import BlobNotFound, BlobStore, IntegrityError
from consortium.voting import Judgement, LossFn, VoteRule, judge

if TYPE_CHECKING:
    from consortium.config import RunConfig

__all__ = ["ChainRound", "ChainRoundRunner", "chain_params", "commit_uri", "parse_uri", "strategy_names"]

ETH = 10**18
HONEST = "honest"
COLLUDERS = "colluding_voter"
NO_SHOW = "no_show"
LAZY = "lazy_voter"
TXLOG = "chain/txlog.jsonl"  # in the run directory: every transaction, replayable by `audit`
HEAD = "chain/head.json"  # the chain head after the last round: what a replay must reproduce


def wei(eth: float) -> int:
    return round(eth * ETH)


def to_eth(amount: int) -> float:
    return amount / ETH


def chain_params(
    *,
    participants: int,
    proposers: int,
    voters: int,
    min_stake: float,
    reward_per_round: float,
    slash_rejected_bps: int,
    slash_minority_bps: int,
    slash_no_show_bps: int,
    quorum_bps: int,
) -> Params:
    """Deployment parameters whose windows fit one transaction per block (the embedded EVM's pace):
    every participant commits and reveals a seed, each proposer commits, two candidates, each voter
    commits and reveals."""
    return Params(
        min_stake=wei(min_stake),
        seed_blocks=participants + 1,
        commit_blocks=proposers + 1,
        candidate_blocks=3,
        vote_commit_blocks=voters + 1,
        vote_reveal_blocks=voters + 1,
        exit_cooldown=4,
        n_proposers=proposers,
        n_voters=voters,
        reward_per_round=wei(reward_per_round),
        slash_rejected_bps=slash_rejected_bps,
        slash_minority_bps=slash_minority_bps,
        slash_no_show_bps=slash_no_show_bps,
        quorum_bps=quorum_bps,
    )


def config_params(cfg: RunConfig) -> Params:
    """`chain_params` for a run config: its roles, stakes, rewards, slashes and quorum."""
    cc = cfg.chain
    proposers, voters = cc.roles(cfg.participants)
    return chain_params(
        participants=cfg.participants,
        proposers=proposers,
        voters=voters,
        min_stake=cc.min_stake,
        reward_per_round=cc.reward_per_round,
        slash_rejected_bps=cc.slash_rejected_bps,
        slash_minority_bps=cc.slash_minority_bps,
        slash_no_show_bps=cc.slash_no_show_bps,
        quorum_bps=cc.quorum_bps,
    )


def commit_uri(blob: str, n_examples: int, config: str) -> str:
    """Where the update lives, the sample count its proposer claims (FedAvg's weight) and the run
    config it trained under (`config_digest`, so a config edited after the run shows in the audit)."""
    return f"cas:{blob}?n={n_examples}&config={config}"


def parse_uri(uri: str) -> tuple[str, int, str]:
    """(blob, n_examples, config digest) from a commit URI; ProtocolError naming a malformed URI."""
    head, _, query = uri.partition("?")
    fields = dict(part.partition("=")[::2] for part in query.split("&"))
    blob = head.removeprefix("cas:")
    n, config = fields.get("n", ""), fields.get("config", "")
    if not head.startswith("cas:") or len(blob) != 64 or not n.isdigit() or not config:
        raise ProtocolError(f"commit URI {uri!r} is not 'cas:<sha256>?n=<examples>&config=<digest>'")
    return blob, int(n), config


def candidate_marks(
    cand: Candidate, unavailable: Sequence[str], slash_excluded: bool = False
) -> tuple[list[str], list[str]]:
    """(flagged, excluded) proposers of a posted candidate. Flagged is evidence of misconduct and is
    slashed: an update the screen dropped (empty or replayed) or a blob that is missing or corrupt.
    Excluded is what the aggregator left out by its own statistics (Multi-Krum drops a fixed count
    every round, honest or not): not rewarded, not slashed, unless `slash_excluded`."""
    evidence = set(cand.screened) | set(unavailable)
    excluded = {a for a in cand.flagged if a not in evidence}
    if slash_excluded:
        return sorted(evidence | excluded), []
    return sorted(evidence), sorted(excluded)


def seed_int(seed: bytes) -> int:
    """The defence's public randomness for a round: the first 8 bytes of the contract's draw seed."""
    return int.from_bytes(seed[:8], "big")


def _secret(kind: str, run_seed: int, round_id: int, name: str) -> bytes:
    """Per-participant seeds and salts, derived so that a run replays bit for bit."""
    return hashlib.sha256(f"{kind}:{run_seed}:{round_id}:{name}".encode()).digest()


@dataclass
class ChainRound:
    """What one contract round did, by participant name, for the report and the audit."""

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
    pipeline: Candidate | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able record, the pipeline's flags/weights/time at the top level as in a fedavg round."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("pipeline", "commitments", "defence")}
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
    slash_excluded: bool = False  # the config's chain.slash_excluded (see `candidate_marks`)
    genesis: str | None = None  # the run's initial adapter (the first round's input), for `base_margin`
    base_losses: dict[str, float] = field(default_factory=dict)  # each voter's loss of the genesis

    def __post_init__(self) -> None:
        self.public = PublicHistory(self.store, self.layout, self.rule)  # FoolsGold sums, probe verdicts
        self.names = {a.lower(): n for n, a in self.accounts.items()}
        self.coalition = frozenset(self.attackers) | {n for n, s in self.strategies.items() if s == COLLUDERS}

    # ---------------------------------------------------------------- set-up

    def register_all(self, stake: float) -> None:
        """Every participant registers with its stake (once, before the first round)."""
        for addr in self.accounts.values():
            self.operator.as_account(addr).register(wei(stake))

    def _client(self, name: str) -> ChainClient:
        return self.operator.as_account(self.accounts[name])

    def _name(self, address: str) -> str:
        return self.names.get(address.lower(), address)

    # ---------------------------------------------------------------- one round

    def run_round(
        self,
        global_hash: str,
        train: TrainFn,
        loss_of: Callable[[str], LossFn],
        last_step: torch.Tensor | None = None,
    ) -> ChainRound:
        """Open, seed, draw, train+commit, post, vote, finalize. `loss_of(voter)` is that voter's
        held-out loss of an adapter vector; `last_step` the previous global change (public)."""
        gas: dict[str, int] = {}
        self.genesis = self.genesis or global_hash

        def sent(tx: Any) -> Any:
            gas[tx.function] = gas.get(tx.function, 0) + tx.gas_used
            return tx

        op = self._client(min(self.accounts))  # opening needs a registered participant; any will do
        sent(op.open_round(global_hash))
        info = op.round_info()
        rid = info.round_id
        for name in self.accounts:  # optional entropy: everyone commits, then reveals a seed
            sent(self._client(name).commit_seed(rid, _secret("seed", self.run_seed, rid, name)))
        op.advance_to_phase(Phase.SEED_REVEAL, info)
        for name in self.accounts:
            sent(self._client(name).reveal_seed(rid))
        op.advance_to_phase(Phase.DRAW, info)
        sent(op.draw())
        rec = op.history().round(rid)
        out = ChainRound(rid, global_hash, global_hash, "", gas=gas)
        if rec.outcome == Outcome.CANCELLED:
            out.outcome = Outcome.CANCELLED.name.lower()
            self._finish(out)
            return out
        out.seed = seed_int(rec.seed or b"")
        out.proposers = [self._name(a) for a in rec.proposers]
        out.voters = [self._name(a) for a in rec.voters]

        start = get_vector(self.store, global_hash, self.layout)
        prefetch(train, [n for n in out.proposers if self.strategies.get(n) != NO_SHOW], start)
        for name in out.proposers:
            if self.strategies.get(name) == NO_SHOW:
                continue
            delta, n = train(name, start)
            blob = put_vector(self.store, delta, self.layout)
            sent(self._client(name).commit(rid, blob, commit_uri(blob, n, self.config)))
            out.commitments.append(Commitment(name, blob, n))

        op.advance_to_phase(Phase.CANDIDATE)
        pipeline, coalition_hash = self._post_candidates(rid, out, sent, last_step)

        op.advance_to_phase(Phase.VOTE_COMMIT)
        gone = set(out.defence.get("unavailable", []))
        updates = {
            c.participant: get_vector(self.store, c.blob, self.layout)
            for c in out.commitments
            if c.participant not in gone
        }
        for name in out.voters:
            vote = self._ballot(name, rid, out, pipeline, coalition_hash, start, updates, loss_of)
            if vote is not None:
                sent(self._client(name).commit_vote(rid, vote))
        op.advance_to_phase(Phase.VOTE_REVEAL)
        for name in out.voters:
            if name in out.votes:
                sent(self._client(name).reveal_vote(rid))
        op.advance_to_phase(Phase.FINALIZE)
        sent(op.finalize())
        self._record_outcome(out)
        self._finish(out)
        return out

    def pipeline(
        self, global_in: str, commitments: Sequence[Commitment], seed: int, last_step: torch.Tensor | None
    ) -> tuple[Candidate | None, list[str]]:
        """The round's candidate: the pure screening + aggregation pipeline over the committed updates,
        keyed by proposer address (what the chain records); the public history grows by this round.
        A committed blob that is missing or does not match its commitment counts as a no-show: left
        out of the aggregate and flagged. Returns (candidate or None, unavailable proposers)."""
        keyed: list[Commitment] = []
        unavailable: list[str] = []
        for c in commitments:
            try:
                get_vector(self.store, c.blob, self.layout)
            except (BlobNotFound, IntegrityError, ProtocolError):
                unavailable.append(self.accounts[c.participant])
                continue
            keyed.append(Commitment(self.accounts[c.participant], c.blob, c.n_examples))
        if not keyed:
            return None, unavailable
        self.public.last_step = last_step
        return self.public.candidate(global_in, keyed, seed), unavailable

    def _post_candidates(
        self, rid: int, out: ChainRound, sent: Callable[[Any], Any], last_step: torch.Tensor | None
    ) -> tuple[Candidate | None, str | None]:
        """The pipeline's candidate, posted by an honest participant; the coalition's unscreened one
        too when an attacker's update is in the round."""
        if not out.commitments:
            return None, None
        pipeline, unavailable = self.pipeline(out.global_in, out.commitments, out.seed, last_step)
        out.pipeline = pipeline
        if pipeline is None:  # every committed blob unavailable: nothing to post, voters reject
            names = sorted(self._name(a) for a in unavailable)
            out.defence = {"flagged": names, "excluded": [], "unavailable": names}
            return None, None
        flagged_addresses, excluded_addresses = candidate_marks(pipeline, unavailable, self.slash_excluded)
        flagged = sorted(self._name(a) for a in flagged_addresses)
        excluded = sorted(self._name(a) for a in excluded_addresses)
        out.defence = {
            "flagged": flagged,
            "excluded": excluded,
            "unavailable": [self._name(a) for a in unavailable],
            "weights": {self._name(a): w for a, w in pipeline.summary()["weights"].items()},
            "defense_seconds": pipeline.seconds,
            "info": pipeline.result.info,
        }
        honest_hash = out.candidate = put_vector(self.store, pipeline.vector, self.layout)
        poster = next((n for n, s in sorted(self.strategies.items()) if s == HONEST), None)
        if poster is not None:
            sent(self._client(poster).post_candidate(rid, honest_hash, flagged_addresses, excluded_addresses))
            out.candidates.append(
                {"poster": poster, "hash": honest_hash, "flagged": flagged, "excluded": excluded}
            )
        coalition_hash = None
        if self.coalition and any(c.participant in self.attackers for c in out.commitments):
            unscreened_params = replace(self.rule.params, screen_min_norm=0.0, screen_stale_cosine=2.0)
            plain = replace(self.rule, aggregator="fedavg", params=unscreened_params, dp=None, probe=None)
            keyed = [
                Commitment(self.accounts[c.participant], c.blob, c.n_examples)
                for c in out.commitments
                if self.accounts[c.participant] not in unavailable
            ]
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
        return pipeline, coalition_hash

    def _ballot(
        self,
        name: str,
        rid: int,
        out: ChainRound,
        pipeline: Candidate | None,
        coalition_hash: str | None,
        start: torch.Tensor,
        updates: Mapping[str, torch.Tensor],
        loss_of: Callable[[str], LossFn],
    ) -> Vote | None:
        """This voter's ballot by its strategy (None: it does not vote)."""
        strategy = self.strategies.get(name, HONEST)
        salt = _secret("salt", self.run_seed, rid, name)
        numbers = {c["hash"]: c["number"] for c in out.candidates}
        flags: list[str] = []
        if strategy == NO_SHOW:
            return None
        if name in self.coalition:
            choice = numbers.get(coalition_hash or "", 1 if out.candidates else 0)
        elif strategy == LAZY:
            choice = 1 if out.candidates else 0
        else:
            verdict = self._judge(name, out, pipeline, start, updates, loss_of)
            flags = verdict.flags
            choice = 0
            if verdict.accept and pipeline is not None:
                mine = (out.candidate, out.defence["flagged"], out.defence["excluded"])
                choice = next(
                    (c["number"] for c in out.candidates if (c["hash"], c["flagged"], c["excluded"]) == mine),
                    0,
                )
        mask = self.operator.flag_mask([self.accounts[p] for p in flags if p in out.proposers])
        out.votes[name] = {"choice": choice, "flags": [p for p in flags if p in out.proposers]}
        return Vote(choice, mask, salt)

    def _judge(
        self,
        name: str,
        out: ChainRound,
        pipeline: Candidate | None,
        start: torch.Tensor,
        updates: Mapping[str, torch.Tensor],
        loss_of: Callable[[str], LossFn],
    ) -> Judgement:
        """An honest voter recomputes the candidate (the same pure function, here shared) and judges it."""
        loss = loss_of(name)
        if self.vote_rule.base_margin is not None and self.genesis and name not in self.base_losses:
            self.base_losses[name] = loss(get_vector(self.store, self.genesis, self.layout))
        verdict = judge(
            None if pipeline is None else pipeline.vector,
            start,
            updates,
            out.defence.get("flagged", []),
            loss,
            self.vote_rule,
            check_updates=self.check_updates,
            loss_base=self.base_losses.get(name),
        )
        out.judgements[name] = {
            "accept": verdict.accept,
            "loss_global": verdict.loss_global,
            "loss_candidate": verdict.loss_candidate,
            "loss_base": self.base_losses.get(name),
            "reasons": verdict.reasons,
        }
        return verdict

    def _record_outcome(self, out: ChainRound) -> None:
        rec = self.operator.history().round(out.round_id)
        # REJECTED is 0: test for None, not for truth
        out.outcome = (rec.outcome if rec.outcome is not None else Outcome.NO_QUORUM).name.lower()
        if rec.outcome == Outcome.ACCEPTED and rec.global_hash is not None:
            out.global_out = rec.global_hash.hex()
        out.rewards = {self._name(a): to_eth(v) for a, v in rec.rewards.items()}
        out.slashes = [
            {"who": self._name(a), "eth": to_eth(v), "reason": r.name.lower()} for a, v, r in rec.slashes
        ]

    def _finish(self, out: ChainRound) -> None:
        for p in self.operator.all_participants():
            name = self._name(p.address)
            out.stakes[name] = to_eth(p.stake)
            out.balances[name] = to_eth(p.balance)


def strategy_names(
    specs: Sequence[Any], names: Sequence[str], taken: Sequence[str], seed: int
) -> dict[str, str]:
    """Seeded, disjoint draw of who plays each non-attack strategy, among participants not attacking."""
    rng = random.Random(f"strategies:{seed}")
    free = sorted(set(names) - set(taken))
    chosen: dict[str, str] = {}
    for spec in specs:
        k = min(attackers_for(spec.fraction, len(names)), len(free))
        for name in sorted(rng.sample(free, k)):
            chosen[name] = spec.kind
            free.remove(name)
    return chosen
