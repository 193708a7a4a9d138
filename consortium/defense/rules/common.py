"""Helpers every rule uses to build its `AggregateResult`."""

from __future__ import annotations

from typing import Any

import torch

from consortium.defense.params import AggregateResult

F64 = torch.float64


def _result(agg: torch.Tensor, weights: torch.Tensor, flags: torch.Tensor, **info: Any) -> AggregateResult:
    return AggregateResult(aggregate=agg, weights=weights.to(F64).cpu(), flags=flags.cpu(), info=info)


def _normalised(w: torch.Tensor) -> torch.Tensor:
    total = w.sum()
    return w / total if total > 0 else torch.zeros_like(w)


def _no_flags(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.bool)


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.tolist()]
