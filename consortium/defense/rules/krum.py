"""The Krum family: Krum, Multi-Krum and Bulyan, all scored from one float64 Gram matrix."""

from __future__ import annotations

import math

import torch

from consortium.defense.finite import FiniteCheck
from consortium.defense.kernels import gram, sq_dists, weighted_sum
from consortium.defense.order_stats import closest_to_median_mean
from consortium.defense.params import AggregateResult, DefenseParams, RuleContext
from consortium.defense.registry import register
from consortium.defense.rules.common import F64, _floats, _normalised, _result


def krum_f(n: int, f: int | None) -> int:
    """Krum's f: the given one (must be < n), else the largest with n > 2f + 2, i.e. max(0, (n - 3) // 2)."""
    if f is None:
        return max(0, (n - 3) // 2)
    if f >= n:
        raise ValueError(f"defense.f = {f} must be < n = {n} (the number of clients)")
    return f


class KrumScorer:
    """Krum scores over a shrinking set of clients from ONE Gram matrix.

    score_i = sum of the squared distances from i to its k = max(1, r - f - 2) nearest other clients still
    in the set (r = its size; k <= r - 1). Each row of the distance matrix is sorted once; removing a
    client only masks it out, so Bulyan's repeated Krum costs O(n^2) per step, not a new sort. The [n, n]
    work stays on the updates' device (Bulyan with n = 1000 takes ~500 steps); scores come back on the CPU.
    """

    def __init__(
        self, updates: torch.Tensor, f: int, params: DefenseParams, check: FiniteCheck | None = None
    ) -> None:
        g = gram(updates, params.chunk_elems, version=params.aggregation_version, on_device=True, check=check)
        d2 = sq_dists(g)
        d2.fill_diagonal_(math.inf)
        self.vals, self.nbr = torch.sort(d2, dim=1, stable=True)
        self.vals = torch.where(torch.isinf(self.vals), 0.0, self.vals)  # the self entry, never taken
        self.f = f
        self.alive = torch.ones(d2.shape[0], dtype=torch.bool, device=d2.device)
        self.r = d2.shape[0]

    def remove(self, i: int) -> None:
        self.alive[i] = False
        self.r -= 1

    def scores(self) -> tuple[torch.Tensor, int]:
        """Scores of the alive clients (inf for removed ones) and the number of neighbours k used."""
        r = self.r
        k = min(max(1, r - self.f - 2), r - 1)
        a = self.alive[self.nbr] & self.alive[:, None]
        take = a & (a.cumsum(1) <= k)
        s = torch.where(take, self.vals, 0.0).sum(1)
        return torch.where(self.alive, s, math.inf).cpu(), k

    def best(self) -> tuple[int, torch.Tensor, int]:
        """The alive client with the lowest score (ties: lowest index), its scores and k."""
        s, k = self.scores()
        return int(torch.sort(s, stable=True).indices[0]), s, k


@register("krum", flora=True)
def krum(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Krum (Blanchard et al., 2017, "Machine learning with adversaries: Byzantine tolerant gradient
    descent"): score each update by the sum of squared distances to its k = max(1, n - f - 2) nearest
    others and return the lowest-scoring update (ties: lowest client index). Pairwise distances come from
    one float64 Gram matrix. Sample weights are ignored; `weights` is one-hot, everyone else is flagged."""
    n = updates.shape[0]
    f = krum_f(n, ctx.params.f)
    sel, s, k = KrumScorer(updates, f, ctx.params, ctx.finite).best()
    w = torch.zeros(n, dtype=F64)
    w[sel] = 1.0
    flags = torch.ones(n, dtype=torch.bool)
    flags[sel] = False
    return _result(updates[sel].clone(), w, flags, f=f, neighbours=k, scores=_floats(s), selected=[sel])


@register("multi_krum", flora=True)
def multi_krum(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Multi-Krum (Blanchard et al., 2017): keep the m clients with the lowest Krum scores (computed once;
    m = multi_krum_m or n - f; ties: lowest index) and return their sample-weighted mean (uniform if the
    kept clients' weights are all 0). The others are flagged."""
    n = updates.shape[0]
    f = krum_f(n, ctx.params.f)
    m = ctx.params.multi_krum_m if ctx.params.multi_krum_m is not None else n - f
    if m > n:
        raise ValueError(f"defense.multi_krum_m = {m} must be <= n = {n} (the number of clients)")
    s, k = KrumScorer(updates, f, ctx.params, ctx.finite).scores()
    keep = torch.sort(s, stable=True).indices[:m]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[keep] = True
    w = torch.where(mask, weights, 0.0)
    w = _normalised(w) if w.sum() > 0 else mask.to(F64) / m
    agg = weighted_sum(
        updates, w, ctx.params.chunk_elems, version=ctx.params.aggregation_version, check=ctx.finite
    )
    return _result(agg, w, ~mask, f=f, m=m, neighbours=k, scores=_floats(s), selected=sorted(keep.tolist()))


def bulyan_f(n: int, f: int | None) -> int:
    """Bulyan's f: the given one, else the largest with n >= 4f + 3; refuses n < 4f + 3."""
    f = max(0, (n - 3) // 4) if f is None else f
    if n < 4 * f + 3:
        raise ValueError(f"bulyan needs n >= 4f + 3 clients, got n = {n} with defense.f = {f}")
    return f


@register("bulyan")
def bulyan(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Bulyan (El Mhamdi et al., 2018, "The hidden vulnerability of distributed learning in Byzantium"):
    needs n >= 4f + 3. Select theta = n - 2f clients by applying Krum repeatedly to the remaining set
    (scores recomputed on that set, one Gram matrix), then per coordinate average the beta = theta - 2f
    selected values closest to the selected values' median (equal distances: smaller value first).
    Unweighted. `weights` = per-coordinate share averaged over coordinates; unselected clients are
    flagged."""
    n = updates.shape[0]
    f = bulyan_f(n, ctx.params.f)
    theta, beta = n - 2 * f, n - 4 * f
    scorer = KrumScorer(updates, f, ctx.params, ctx.finite)
    order: list[int] = []
    for _ in range(theta):
        sel, _, _ = scorer.best()
        order.append(sel)
        scorer.remove(sel)
    rows = torch.tensor(sorted(order), dtype=torch.long)
    agg, share = closest_to_median_mean(updates, beta, ctx.params.chunk_elems, rows)
    flags = torch.ones(n, dtype=torch.bool)
    flags[rows] = False
    return _result(agg, share, flags, f=f, theta=theta, beta=beta, selection_order=order)
