"""The probe in the aggregation pipeline: scores -> per-client weights and flags, before the aggregator.

Called from `consortium.protocol.compute_candidate`; a pure function of (probe artifact by hash, the
committed updates, the evidence blobs a client committed with its update, the client's earlier
observations). Levels:

- client: the probe scores the committed update; its weight is a smooth ramp of the score, averaged
  over the client's rounds; verifiable by anyone from the committed update alone.
- step: the client commits a blob of ΔLoRA snapshots taken every k local steps; each is scored and
  counted benign / harmful; Beta trust with time decay is the weight. Self-reported: see docs/probes.md.
- shadow: the client commits the delta of a shadow branch trained from the fixed initial adapter with a
  fixed lr; the probe scores that (no drift with the global model). Self-reported like step snapshots.
- evidence (any level, `evidence_m > 0`): after m consecutive identical verdicts a client is frozen
  benign (weight 1) or malicious (weight 0, flagged) for good.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from consortium.probe.artifact import ProbeError, check_layout, load
from consortium.probe.trust import beta_trust, frozen_verdict
from consortium.store import BlobNotFound, BlobStore, IntegrityError

Level = Literal["client", "step", "shadow"]
LEVELS: tuple[str, ...] = ("client", "step", "shadow")


@dataclass(frozen=True)
class ProbeRule:
    """The probe part of the public aggregation rule (the run config's `[probe]` table)."""

    artifact: str
    level: Level = "client"
    low: float = 0.3  # score at or below which the weight is 1
    high: float = 0.7  # score at or above which the weight is 0
    flag_below: float = 0.5  # a client whose (averaged) weight falls below this is flagged: weight 0
    average_rounds: bool = True  # client / shadow: average the weight over the client's rounds
    step_threshold: float = 0.5  # step: a snapshot scoring at least this counts as a harmful step
    decay: float = 0.8  # step: Beta counts of earlier rounds are multiplied by this each round
    evidence_m: int = 0  # freeze a client after m consecutive identical verdicts (0 = off)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"probe.level must be one of {LEVELS}, got {self.level!r}")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"probe: need 0 <= low < high <= 1, got low={self.low}, high={self.high}")


def probe_rule(section: Any) -> ProbeRule | None:
    """The ProbeRule of a run config's `[probe]` table, or None when it names no artifact."""
    if section is None or section.artifact is None:
        return None
    keys = ("low", "high", "flag_below", "average_rounds", "step_threshold", "decay", "evidence_m")
    return ProbeRule(section.artifact, section.level, **{k: getattr(section, k) for k in keys})


@dataclass(frozen=True)
class Observation:
    """What one round said about one client: its probe weight, step counts, and the round's verdict."""

    weight: float
    benign: float = 0.0
    harmful: float = 0.0
    flagged: bool = False


@dataclass
class Decision:
    """The probe's effect on one round: weight multipliers, who is excluded and why, what to remember."""

    weights: torch.Tensor  # float64 [n], multiplies the aggregation weights
    flagged: dict[int, str] = field(default_factory=dict)
    observations: dict[str, Observation] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def ramp(score: float, low: float, high: float) -> float:
    """Weight of a probe score: 1 up to `low`, 0 from `high`, a smoothstep in between (no cliff)."""
    t = min(1.0, max(0.0, (score - low) / (high - low)))
    return 1.0 - t * t * (3.0 - 2.0 * t)


def _evidence_vectors(store: BlobStore, blob: str, size: int) -> torch.Tensor:
    try:
        state = store.get_tensors(blob)
    except (BlobNotFound, IntegrityError, ValueError) as e:
        raise ProbeError(f"evidence blob {blob}: {e}") from None
    t = state.get("snapshots")
    if t is None or t.dim() != 2 or t.shape[1] != size or t.dtype != torch.float32 or t.shape[0] == 0:
        raise ProbeError(f"evidence blob {blob}: expected a float32 'snapshots' tensor [k >= 1, {size}]")
    return t


def decide(
    store: BlobStore,
    layout: Sequence[tuple[str, tuple[int, ...]]],
    rule: ProbeRule,
    updates: torch.Tensor,
    clients: Sequence[str],
    history: Mapping[str, Sequence[Observation]],
    evidence: Mapping[str, str],
) -> Decision:
    """The round's probe decision for the committed `updates` (rows in `clients` order)."""
    probe = load(store, rule.artifact)
    check_layout(probe, list(layout), rule.artifact)
    n = len(clients)
    weights = torch.ones(n, dtype=torch.float64)
    out = Decision(weights)
    client_scores = probe.score(updates).tolist() if rule.level == "client" else [0.0] * n
    for i, c in enumerate(clients):
        past = list(history.get(c, ()))
        reason = None
        if rule.level == "client":
            score = client_scores[i]
            obs = Observation(ramp(score, rule.low, rule.high))
        elif c not in evidence:
            score, obs = 1.0, Observation(0.0)
            reason = f"no {rule.level} evidence committed with the update"
        else:
            scores = probe.score(_evidence_vectors(store, evidence[c], updates.shape[1])).tolist()
            score = max(scores) if rule.level == "step" else scores[-1]
            harmful = float(sum(s >= rule.step_threshold for s in scores))
            obs = Observation(ramp(score, rule.low, rule.high), len(scores) - harmful, harmful)
        if rule.level == "step":
            w = beta_trust([(o.benign, o.harmful) for o in [*past, obs]], rule.decay)
        elif rule.average_rounds:
            w = sum(o.weight for o in [*past, obs]) / (len(past) + 1)
        else:
            w = obs.weight
        flagged = reason is not None or w < rule.flag_below or w <= 0.0
        frozen = frozen_verdict([o.flagged for o in past], rule.evidence_m)
        if frozen is not None:
            flagged, w = frozen, 0.0 if frozen else 1.0
            reason = f"frozen {'malicious' if frozen else 'benign'} after {rule.evidence_m} verdicts"
        if flagged:
            out.flagged[i] = reason or f"probe weight {w:.3f} below {rule.flag_below:g} (score {score:.3f})"
            w = 0.0
        weights[i] = w
        out.observations[c] = Observation(obs.weight, obs.benign, obs.harmful, flagged)
        out.info[c] = {"score": score, "weight": w, "frozen": frozen}
    return out


def grow(history: dict[str, list[Observation]], decision: Decision) -> None:
    """Append the round's observations: what every runner (and the audit) does after each round."""
    for c, obs in decision.observations.items():
        history.setdefault(c, []).append(obs)
