"""The round protocol: open -> train -> commit -> aggregate -> finalize, over a ledger and a blob store.

The ledger is where the round's records live. `MemoryLedger` is the centralised FedAvg baseline (every
participant proposes, every candidate is accepted); the contract client of the chain issue implements
the same `Ledger` interface so the same code drives a decentralised round. The candidate aggregate is a
pure function of public records (`compute_candidate`), so anyone holding the store can recompute it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from consortium.aggregate_lora import FloraError, check_rule, flora_candidate
from consortium.defense import AggregateResult, DefenseParams, aggregate
from consortium.defense.screen import screen
from consortium.model import flat_to_state, state_to_flat
from consortium.privacy.mechanism import DpRule
from consortium.store import BlobStore

if TYPE_CHECKING:
    from consortium.config import RunConfig

Layout = Sequence[tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Commitment:
    """A participant's committed update: who, which blob, and the sample count it claims."""

    participant: str
    blob: str
    n_examples: int


@dataclass
class RoundRecord:
    """Everything needed to recompute and audit one round."""

    round: int
    global_in: str
    seed: int = 0  # the round's public randomness (defence noise)
    commitments: list[Commitment] = field(default_factory=list)
    root: str | None = None  # FLTrust's root update, committed like any other update
    evidence: dict[str, str] = field(default_factory=dict)  # probe evidence blobs (step / shadow level)
    candidate: str | None = None
    flagged: list[str] = field(default_factory=list)
    accepted: bool | None = None
    global_out: str | None = None


class Ledger(Protocol):
    """What the round needs from a ledger; the in-memory one here, the contract in `consortium.chain`."""

    def open_round(self, global_hash: str) -> RoundRecord: ...
    def proposers(self, rnd: RoundRecord, candidates: Sequence[str]) -> list[str]: ...
    def commit(self, rnd: RoundRecord, commitment: Commitment) -> None: ...
    def post_candidate(self, rnd: RoundRecord, candidate: str) -> None: ...
    def finalize(self, rnd: RoundRecord) -> str: ...


def round_seed(global_hash: str, rnd: int) -> int:
    """Public randomness of the in-memory ledger: fixed by the round's input model, unknown before it."""
    return int.from_bytes(hashlib.sha256(f"{global_hash}:{rnd}".encode()).digest()[:8], "big")


class ProtocolError(RuntimeError):
    """A step out of order or a record that breaks the protocol (double commit, missing blob, ...)."""


@dataclass
class MemoryLedger:
    """Centralised FedAvg baseline: everyone proposes and the candidate is always accepted."""

    rounds: list[RoundRecord] = field(default_factory=list)

    def open_round(self, global_hash: str) -> RoundRecord:
        if self.rounds and self.rounds[-1].global_out is None:
            raise ProtocolError(f"round {self.rounds[-1].round} is still open")
        rnd = RoundRecord(
            round=len(self.rounds), global_in=global_hash, seed=round_seed(global_hash, len(self.rounds))
        )
        self.rounds.append(rnd)
        return rnd

    def proposers(self, rnd: RoundRecord, candidates: Sequence[str]) -> list[str]:
        return list(candidates)

    def commit(self, rnd: RoundRecord, commitment: Commitment) -> None:
        if any(c.participant == commitment.participant for c in rnd.commitments):
            raise ProtocolError(f"round {rnd.round}: {commitment.participant} already committed")
        rnd.commitments.append(commitment)

    def post_candidate(self, rnd: RoundRecord, candidate: str) -> None:
        rnd.candidate = candidate

    def finalize(self, rnd: RoundRecord) -> str:
        if rnd.candidate is None:
            raise ProtocolError(f"round {rnd.round}: no candidate posted")
        rnd.accepted = True
        rnd.global_out = rnd.candidate
        return rnd.global_out


def put_vector(store: BlobStore, vec: torch.Tensor, layout: Layout) -> str:
    """Store an adapter vector (global or update) as a safetensors blob named by its sha256."""
    return store.put_tensors(flat_to_state(vec, layout))


def get_vector(store: BlobStore, digest: str, layout: Layout) -> torch.Tensor:
    """Read a verified blob back into a vector, refusing wrong tensor names, shapes or dtype."""
    state = store.get_tensors(digest)
    for name, t in sorted(state.items()):
        if t.dtype != torch.float32:
            raise ProtocolError(f"blob {digest}: {name} is {t.dtype}, expected torch.float32")
    try:
        return state_to_flat(state, layout)
    except ValueError as e:
        raise ProtocolError(f"blob {digest}: {e}") from None


def _committed_update(store: BlobStore, c: Commitment, layout: Layout) -> torch.Tensor:
    try:
        return get_vector(store, c.blob, layout)
    except ProtocolError as e:
        raise ProtocolError(f"update from {c.participant!r}: {e}") from None


@dataclass(frozen=True)
class AggregationRule:
    """How a round's updates become the next global model; part of the public run config."""

    aggregator: str = "fedavg"
    weighting: Literal["samples", "uniform"] = "samples"
    server_lr: float = 1.0
    params: DefenseParams = field(default_factory=DefenseParams)
    # "flora": the candidate is the rank-r projection of the exact product sum (`consortium.aggregate_lora`);
    # every other LoRA variant's candidate is linear in the flat vectors
    variant: str = "lora"
    dp: DpRule | None = None  # client-level DP: clip before the screen, noise after the rule
    probe: Any = None  # a consortium.probe.ProbeRule: screen by a probe artifact named by hash


def rule_from_config(cfg: RunConfig) -> AggregationRule:
    """The public aggregation rule of a run config: what the runner uses and the audit rebuilds."""
    from consortium.privacy.tracker import planned_updates, resolved_noise_multiplier

    dp = None
    pv = cfg.privacy
    if pv.on and pv.clip is not None:
        dp = DpRule(pv.mode, pv.clip, resolved_noise_multiplier(cfg), planned_updates(cfg))  # type: ignore[arg-type]
    from consortium.probe import probe_rule

    return AggregationRule(
        cfg.aggregator, cfg.weighting, cfg.server_lr, cfg.defense, cfg.lora.variant, dp, probe_rule(cfg.probe)
    )


@dataclass
class Candidate:
    """The candidate global vector and what the defence said about each proposer."""

    vector: torch.Tensor
    clients: list[str]
    result: AggregateResult
    seconds: float  # time spent in screening + aggregation (the defence's cost per round)
    probe: Any = None  # the probe's Decision, when the rule has a probe (its observations feed history)

    @property
    def flagged(self) -> list[str]:
        return [c for c, f in zip(self.clients, self.result.flags.tolist(), strict=True) if f]

    @property
    def screened(self) -> list[str]:
        """Proposers the screen dropped (empty or replayed updates): evidence, not a rule's judgement."""
        return sorted(self.result.info.get("screened", {}))

    def summary(self) -> dict[str, Any]:
        """JSON-able record of the defence's decision for reports."""
        return {
            "flagged": self.flagged,
            "weights": dict(zip(self.clients, self.result.weights.tolist(), strict=True)),
            "defense_seconds": self.seconds,
            "info": self.result.info,
        }


def compute_candidate(
    store: BlobStore,
    layout: Layout,
    global_in: str,
    commitments: Sequence[Commitment],
    rule: AggregationRule,
    *,
    seed: int = 0,
    root: str | None = None,
    history: Mapping[str, torch.Tensor] | None = None,
    last_step: torch.Tensor | None = None,
    probe_history: Mapping[str, Sequence[Any]] | None = None,
    evidence: Mapping[str, str] | None = None,
) -> Candidate:
    """The candidate: `global_in + server_lr * (defence(clip(updates), weights) + noise)`, pure in its
    inputs (clip and noise only under `rule.dp`; the noise is seeded from `seed`, see docs/privacy.md).
    Under `rule.variant == "flora"` it is the rank-r projection of the exact weighted product sum
    (`consortium.aggregate_lora`) with the defence's weights; the config refuses flora with DP.

    Inputs are the committed blobs (sorted by participant), the rule, the round's public seed, the
    committed FLTrust root update if any, for FoolsGold each proposer's sum of earlier committed
    updates, and the last change of the global model (all recomputable from earlier rounds). The screen
    (`consortium.defense.screen`) drops empty and replayed updates before the rule sees them; with a
    probe in the rule, `consortium.probe.decide` (the probe artifact from the store by hash, each
    proposer's earlier probe observations, its committed evidence blobs) drops flagged proposers too and
    scales the others' weights.
    `server_lr` is FedOpt's server step (Reddi et al., 2021): 1.0 is plain FedAvg; above 1 it offsets
    the dilution of averaging diverse updates.
    """
    if not commitments:
        raise ProtocolError("no commitments to aggregate")
    ordered = sorted(commitments, key=lambda c: c.participant)
    clients = [c.participant for c in ordered]
    updates = torch.stack([_committed_update(store, c, layout) for c in ordered])
    dp_norms: dict[str, Any] = {}
    if rule.dp is not None:  # central DP clips before anything looks at the updates (docs/privacy.md)
        updates, dp_norms = rule.dp.clip_rows(updates)
    if rule.weighting == "samples":
        weights = torch.tensor([float(c.n_examples) for c in ordered], dtype=torch.float64)
    else:
        weights = torch.ones(len(ordered), dtype=torch.float64)
    hist = None
    if history is not None:  # FoolsGold compares whole histories, this round's update included
        zero = torch.zeros(updates.shape[1], dtype=updates.dtype)
        hist = torch.stack([history.get(c, zero) for c in clients]) + updates
    t0 = time.perf_counter()
    p = rule.params
    screened = screen(updates, last_step, p.screen_min_norm, p.screen_stale_cosine)
    decision = None
    if rule.probe is not None:
        from consortium.probe.defense import decide

        decision = decide(store, layout, rule.probe, updates, clients, probe_history or {}, evidence or {})
        weights = weights * decision.weights
        screened = {**decision.flagged, **screened}
    keep = [i for i in range(len(clients)) if i not in screened]
    root_update = None if root is None else get_vector(store, root, layout)
    if not keep:
        result = AggregateResult(
            torch.zeros_like(updates[0]),
            torch.zeros(len(clients), dtype=torch.float64),
            torch.ones(len(clients), dtype=torch.bool),
        )
    else:
        sub = slice(None) if not screened else torch.tensor(keep)
        result = aggregate(
            rule.aggregator,
            updates[sub],
            weights[sub],
            params=p,
            clients=[clients[i] for i in keep],
            seed=seed,
            root_update=root_update,
            history=None if hist is None else hist[sub],
        )
    if screened:
        if keep:  # with nothing kept, the result above already covers all n
            result = _widen(result, keep, len(clients))
        result.info["screened"] = {clients[i]: why for i, why in sorted(screened.items())}
    if rule.dp is not None:
        kept_weights = weights[torch.tensor(keep, dtype=torch.long)]
        noised, dp_info = rule.dp.finish(result.aggregate, rule.aggregator, kept_weights, seed)
        result = AggregateResult(noised, result.weights, result.flags, dict(result.info))
        result.info["dp"] = dp_info | dp_norms
    if decision is not None:
        result.info["probe"] = decision.info
    seconds = time.perf_counter() - t0
    global_vec = get_vector(store, global_in, layout)
    if rule.variant == "flora":  # the exact product sum with the rule's weights, re-projected to rank r
        try:
            check_rule(rule.aggregator)
            vec, result.info["flora"] = flora_candidate(
                layout, global_vec, updates, result.weights, rule.server_lr
            )
        except FloraError as e:
            raise ProtocolError(str(e)) from None
        return Candidate(vec, clients, result, time.perf_counter() - t0)
    step = result.aggregate
    if rule.server_lr != 1.0:
        step = step * rule.server_lr
    return Candidate(global_vec + step, clients, result, seconds, decision)


def _widen(result: AggregateResult, keep: Sequence[int], n: int) -> AggregateResult:
    """A rule's result over the kept updates, as weights and flags over all n (screened: 0, flagged)."""
    weights = torch.zeros(n, dtype=result.weights.dtype)
    flags = torch.ones(n, dtype=torch.bool)
    idx = torch.tensor(list(keep))
    weights[idx] = result.weights
    flags[idx] = result.flags.to(torch.bool)
    return AggregateResult(result.aggregate, weights, flags, dict(result.info))


TrainFn = Callable[[str, torch.Tensor], tuple[torch.Tensor, int]]
RootFn = Callable[[int, torch.Tensor], torch.Tensor]


def prefetch(train: TrainFn, proposers: Sequence[str], start: torch.Tensor) -> None:
    """Tell a train function that may start them all at once (Ray) whom this round's `train` calls are
    for; it is optional (`train.prefetch`), and commits still happen one by one, in the ledger's order."""
    ahead = getattr(train, "prefetch", None)
    if ahead is not None:
        ahead(list(proposers), start)


@dataclass
class RoundRunner:
    """Drives rounds over a ledger: the same code for the in-process simulation and, later, real nodes.

    `root` trains FLTrust's root update from the round's start vector on the public root set; it is
    stored and recorded like a commitment so the candidate stays a pure function of public records.
    What earlier rounds contribute (FoolsGold's sums, the last global step, probe verdicts) is
    `public`, grown exactly as the audit grows it.
    """

    ledger: Ledger
    store: BlobStore
    layout: Layout
    rule: AggregationRule = field(default_factory=AggregationRule)
    root: RootFn | None = None
    evidence: Callable[[str], torch.Tensor | None] | None = None  # a proposer's step / shadow snapshots

    def __post_init__(self) -> None:
        from consortium.public_history import PublicHistory

        self.public = PublicHistory(self.store, self.layout, self.rule)

    def run_round(
        self, global_hash: str, participants: Sequence[str], train: TrainFn
    ) -> tuple[RoundRecord, Candidate]:
        """One round; `train(participant, global_vector) -> (delta, n_examples)` is the local step."""
        rnd = self.ledger.open_round(global_hash)
        start = get_vector(self.store, global_hash, self.layout)
        proposers = self.ledger.proposers(rnd, participants)
        prefetch(train, proposers, start)
        for pid in proposers:
            delta, n = train(pid, start)
            blob = put_vector(self.store, delta, self.layout)
            self.ledger.commit(rnd, Commitment(participant=pid, blob=blob, n_examples=n))
            shots = None if self.evidence is None else self.evidence(pid)
            if shots is not None:  # committed with the update, so the probe's input is a public record
                rnd.evidence[pid] = self.store.put_tensors({"snapshots": shots.contiguous()})
        if self.rule.aggregator == "fltrust":
            if self.root is None:
                raise ProtocolError("aggregator 'fltrust' needs a root update function (public root set)")
            rnd.root = put_vector(self.store, self.root(rnd.round, start), self.layout)
        cand = self.public.candidate(
            rnd.global_in, rnd.commitments, rnd.seed, root=rnd.root, evidence=rnd.evidence
        )
        rnd.flagged = cand.flagged
        self.ledger.post_candidate(rnd, put_vector(self.store, cand.vector, self.layout))
        self.public.moved(rnd.global_in, self.ledger.finalize(rnd))
        return rnd, cand
