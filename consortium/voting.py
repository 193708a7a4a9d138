"""How an honest voter judges a round: the candidate against the current global model on its own
held-out data, and each committed update on its own.

Pure given a loss function (the voter's held-out loss of an adapter vector): the simulation and a real
node call the same `judge`. What a voter can check without anyone's private data:
- the posted candidate is the deterministic pipeline's output (hash and flags), else it is not voted for;
- the candidate does not make its held-out loss worse than the global model's (beyond a tolerance);
- no update makes its held-out loss clearly worse, none is (near) empty, none replays the last global
  step (what a free rider sends when it skips training).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

LossFn = Callable[[torch.Tensor], float]


@dataclass(frozen=True)
class VoteRule:
    """The thresholds of an honest voter (the config's `[chain]` fields of the same names)."""

    accept_tolerance: float = 0.02
    flag_loss_margin: float = 0.10
    flag_min_norm: float = 0.05
    flag_stale_cosine: float = 0.99


@dataclass
class Judgement:
    """A voter's verdict: accept the candidate or not, the proposers it flags and why (for the report)."""

    accept: bool
    flags: list[str]
    loss_global: float
    loss_candidate: float | None
    reasons: dict[str, str] = field(default_factory=dict)


def update_flags(
    updates: Mapping[str, torch.Tensor],
    global_vec: torch.Tensor,
    loss: LossFn | None,
    loss_global: float,
    rule: VoteRule,
    last_step: torch.Tensor | None = None,
) -> dict[str, str]:
    """Proposers whose update looks bad to this voter, each with the reason."""
    if not updates:
        return {}
    norms = {p: float(u.norm()) for p, u in updates.items()}
    median = float(torch.tensor(sorted(norms.values())).median())
    reasons: dict[str, str] = {}
    last_norm = 0.0 if last_step is None else float(last_step.norm())
    for p, u in sorted(updates.items()):
        if norms[p] <= rule.flag_min_norm * median:
            reasons[p] = f"update norm {norms[p]:.3g} is under {rule.flag_min_norm:g} x median {median:.3g}"
        elif last_step is not None and last_norm > 0 and norms[p] > 0:
            cos = float(torch.dot(u.double(), last_step.double()) / (norms[p] * last_norm))
            if cos >= rule.flag_stale_cosine:
                reasons[p] = f"update replays the last global step (cosine {cos:.4f})"
        if p not in reasons and loss is not None:
            after = loss(global_vec + u)
            if after > loss_global * (1 + rule.flag_loss_margin):
                reasons[p] = f"held-out loss {loss_global:.4f} -> {after:.4f} with this update alone"
    return reasons


def judge(
    candidate: torch.Tensor | None,
    global_vec: torch.Tensor,
    updates: Mapping[str, torch.Tensor],
    pipeline_flags: Sequence[str],
    loss: LossFn,
    rule: VoteRule,
    *,
    last_step: torch.Tensor | None = None,
    check_updates: bool = True,
) -> Judgement:
    """Judge the round. `candidate` is the pipeline's recomputed candidate when one matching it was
    posted, else None (then the voter rejects). Flags: the pipeline's own plus this voter's checks."""
    loss_global = loss(global_vec)
    reasons = {p: "flagged by the screening pipeline" for p in pipeline_flags}
    if check_updates:
        own = update_flags(updates, global_vec, loss, loss_global, rule, last_step)
        reasons |= {p: r for p, r in own.items() if p not in reasons}
    if candidate is None:
        return Judgement(False, sorted(reasons), loss_global, None, reasons)
    loss_candidate = loss(candidate)
    accept = loss_candidate <= loss_global * (1 + rule.accept_tolerance)
    return Judgement(accept, sorted(reasons), loss_global, loss_candidate, reasons)
