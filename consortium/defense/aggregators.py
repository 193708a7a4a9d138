"""Aggregation rules as pure registered functions `(updates [n, d], weights [n]) -> [d]`.

Pure and deterministic so that anyone can recompute an aggregate from public records bit for bit.
Robust rules plug in here by name (`@register("median")`) and are selected by `aggregator` in the config.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Aggregator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
AGGREGATORS: dict[str, Aggregator] = {}


def register(name: str) -> Callable[[Aggregator], Aggregator]:
    def deco(fn: Aggregator) -> Aggregator:
        if name in AGGREGATORS:
            raise ValueError(f"aggregator {name!r} registered twice")
        AGGREGATORS[name] = fn
        return fn

    return deco


def check_inputs(updates: torch.Tensor, weights: torch.Tensor) -> None:
    """Shape, dtype and finiteness checks shared by every rule: bad input is refused, not averaged."""
    if updates.ndim != 2:
        raise ValueError(f"updates must be a 2-D [n, d] tensor, got shape {tuple(updates.shape)}")
    if updates.shape[0] == 0:
        raise ValueError("updates is empty: no participant to aggregate")
    if weights.shape != (updates.shape[0],):
        raise ValueError(f"weights must have shape ({updates.shape[0]},), got {tuple(weights.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be floating point, got {updates.dtype}")
    if not torch.isfinite(updates).all():
        raise ValueError("updates contain NaN or Inf")
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")


@register("fedavg")
def fedavg(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean; accumulated in float64 so the result does not depend on summation order."""
    check_inputs(updates, weights)
    w = weights.to(torch.float64)
    w = w / w.sum()
    return (w[:, None] * updates.to(torch.float64)).sum(0).to(updates.dtype)


def aggregate(name: str, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Run the named rule; the one entry point protocol code and the audit use."""
    try:
        fn = AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}") from None
    return fn(updates, weights)
