"""FedAvg: the sample-weighted mean, the baseline every other rule is measured against."""

from __future__ import annotations

import torch

from consortium.defense.kernels import weighted_sum
from consortium.defense.params import AggregateResult, RuleContext
from consortium.defense.registry import register
from consortium.defense.rules.common import _no_flags, _normalised, _result


@register("fedavg", weighted_mean=True, flora=True)
def fedavg(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """FedAvg (McMahan et al., 2017): the sample-weighted mean of the updates, accumulated in float64 so
    the result does not depend on the clients' order. No robustness; no client is flagged."""
    w = _normalised(weights)
    agg = weighted_sum(
        updates, w, ctx.params.chunk_elems, version=ctx.params.aggregation_version, check=ctx.finite
    )
    return _result(agg, w, _no_flags(len(w)))
