"""The candidate of a round: screen, defence rule and DP over the committed updates, a pure function
of public records (`compute_candidate`), and what it marks each proposer as (`candidate_marks`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from consortium.aggregate_lora import FloraError, check_rule, flora_candidate
from consortium.defense import AggregateResult, DefenseParams, aggregate
from consortium.defense.screen import screen
from consortium.privacy.mechanism import DpRule
from consortium.privacy.tracker import planned_updates, resolved_noise_multiplier
from consortium.privacy.wrap import Outcome, with_dp
from consortium.probe.defense import decide, probe_rule
from consortium.round.records import Commitment, Layout, ProtocolError, get_vector
from consortium.store import BlobStore

if TYPE_CHECKING:
    from consortium.config import RunConfig


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
    dp: DpRule | None = None  # client-level DP wraps screen and rule: clip before, noise after
    probe: Any = None  # a consortium.probe.ProbeRule: screen by a probe artifact named by hash


def rule_from_config(cfg: RunConfig) -> AggregationRule:
    """The public aggregation rule of a run config: what the runner uses and the audit rebuilds."""
    dp = None
    pv = cfg.privacy
    if pv.on and pv.clip is not None:
        dp = DpRule(pv.mode, pv.clip, resolved_noise_multiplier(cfg), planned_updates(cfg))  # type: ignore[arg-type]
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
        """Proposers the screen dropped (empty or replayed updates): evidence, not a rule's judgement.
        Those only the probe dropped are not among them: a probe's verdict is a statistic with a false
        positive rate, so it excludes (the proposal bond) and never slashes (`candidate_marks`)."""
        probe_only = set(self.result.info.get("probe_excluded", ()))
        return sorted(set(self.result.info.get("screened", {})) - probe_only)

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
    inputs (clip and noise only under `rule.dp`: `privacy.wrap.with_dp` wraps screen and rule; the noise
    is seeded from `seed`, see docs/privacy.md).
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
    if rule.weighting == "samples":
        weights = torch.tensor([float(c.n_examples) for c in ordered], dtype=torch.float64)
    else:
        weights = torch.ones(len(ordered), dtype=torch.float64)
    p = rule.params
    committed = torch.stack([_committed_update(store, c, layout) for c in ordered])
    root_update = None if root is None else get_vector(store, root, layout)
    seen: dict[str, Any] = {}  # what the defended stage saw: updates after DP's clip, the probe's decision

    def defended(updates: torch.Tensor) -> Outcome:
        """The screen (and the probe) drop proposers, the rule aggregates the others."""
        seen["updates"] = updates
        hist = None
        if history is not None:  # FoolsGold compares whole histories, this round's update included
            zero = torch.zeros(updates.shape[1], dtype=updates.dtype)
            hist = torch.stack([history.get(c, zero) for c in clients]) + updates
        w = weights
        screened = screen(updates, last_step, p.screen_min_norm, p.screen_stale_cosine)
        if rule.probe is not None:
            decision = decide(
                store, layout, rule.probe, updates, clients, probe_history or {}, evidence or {}
            )
            seen["decision"] = decision
            w = w * decision.weights
            probe_only = sorted(clients[i] for i in decision.flagged if i not in screened)
            screened = {**decision.flagged, **screened}
        else:
            probe_only = []
        keep = [i for i in range(len(clients)) if i not in screened]
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
                w[sub],
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
        if probe_only:  # dropped by the probe alone: excluded, not flagged (`Candidate.screened`)
            result.info["probe_excluded"] = probe_only
        return Outcome(result, w[torch.tensor(keep, dtype=torch.long)])

    t0 = time.perf_counter()
    result = with_dp(rule.dp, rule.aggregator, seed, defended)(committed).result
    decision = seen.get("decision")
    if decision is not None:
        result.info["probe"] = decision.info
    seconds = time.perf_counter() - t0
    global_vec = get_vector(store, global_in, layout)
    if rule.variant == "flora":  # the exact product sum with the rule's weights, re-projected to rank r
        try:
            check_rule(rule.aggregator)
            vec, result.info["flora"] = flora_candidate(
                layout, global_vec, seen["updates"], result.weights, rule.server_lr
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


def candidate_marks(
    cand: Candidate, invalid: Sequence[str], slash_excluded: bool = False, unavailable: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(flagged, excluded) proposers of a posted candidate. Flagged is evidence of misconduct and is
    slashed: an update the screen dropped (empty or replayed) or a commitment that is provably no update
    (`invalid`: a malformed URI or blob). Excluded is what a statistic with false positives left out: the
    aggregator (Multi-Krum drops a fixed count every round, honest or not) or the probe. It is not
    rewarded and forfeits the proposal bond (`chain.proposal_bond_bps`), so an always-excluded proposer
    loses; it is slashed as flagged only under `slash_excluded`. An `unavailable` blob (one party's view
    of the store) is always excluded: the contract slashes it only on the voters' joint missing reports
    (`round.availability`)."""
    evidence = set(cand.screened) | set(invalid)
    excluded = {a for a in cand.flagged if a not in evidence and a not in unavailable}
    if slash_excluded:
        return sorted(evidence | excluded), sorted(unavailable)
    return sorted(evidence), sorted(excluded | set(unavailable))
