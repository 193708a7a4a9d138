"""Coordinate-wise rules: the median and the trimmed mean, unweighted."""

from __future__ import annotations

import math

import torch

from consortium.defense.order_stats import middle_mean
from consortium.defense.params import AggregateResult, RuleContext
from consortium.defense.registry import register
from consortium.defense.rules.common import _no_flags, _result


@register("median")
def median(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Coordinate-wise median (Yin et al., 2018, "Byzantine-robust distributed learning: towards optimal
    statistical rates"): per coordinate the middle value, the mean of the two middle values for even n
    (as numpy.median). Unweighted: sample counts are self-reported and would let one client buy the median.
    `weights` = each client's weight per coordinate (1, or 1/2 for the two middles) averaged over
    coordinates; nobody is excluded as a whole, so no client is flagged."""
    n = updates.shape[0]
    agg, share = middle_mean(updates, (n - 1) // 2, ctx.params.chunk_elems, ctx.finite)
    return _result(agg, share, _no_flags(n))


def trim_count(trim_ratio: float, n: int) -> int:
    """Values cut at each end: floor(trim_ratio * n) (with a 1e-9 guard against 0.29 * 100 = 28.999...),
    at most (n - 1) // 2 so that at least one value stays."""
    return min(math.floor(trim_ratio * n + 1e-9), (n - 1) // 2)


@register("trimmed_mean")
def trimmed_mean(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Coordinate-wise trimmed mean (Yin et al., 2018): per coordinate drop the k = floor(trim_ratio * n)
    largest and k smallest values and average the other n - 2k, unweighted. `weights` = the fraction of
    coordinates in which the client's value is kept, divided by n - 2k (sums to 1); no client is flagged."""
    n = updates.shape[0]
    k = trim_count(ctx.params.trim_ratio, n)
    agg, share = middle_mean(updates, k, ctx.params.chunk_elems, ctx.finite)
    return _result(agg, share, _no_flags(n), trimmed_per_end=k)
