"""Similarity-based rules: FoolsGold (sybils look alike) and FLTrust (trust from a public root update)."""

from __future__ import annotations

from typing import cast

import torch

from consortium.defense.chunks import col_chunks
from consortium.defense.finite import all_finite
from consortium.defense.kernels import cosine_from_gram, gram, weighted_sum
from consortium.defense.params import AggregateResult, RuleContext
from consortium.defense.registry import register
from consortium.defense.rules.common import F64, _floats, _normalised, _result
from consortium.defense.sums_v3 import row_stats_v3


def foolsgold_scores(cs: torch.Tensor, kappa: float) -> torch.Tensor:
    """FoolsGold's per-client learning rates in [0, 1] from a cosine-similarity matrix, following Algorithm 1
    of the paper and the authors' reference code: self-similarity is set to 0 (and takes part in the max),
    v_i = max_j cs_ij; pardoning cs_ij *= v_i / v_j where v_i < v_j; alpha_i = 1 - max_j cs_ij clipped to
    [0, 1]; rescaled so the largest is 1 (set to 0.99 to keep the logit finite);
    alpha = kappa * (ln(alpha / (1 - alpha)) + 0.5) clipped to [0, 1]. All zero when every alpha is 0."""
    cs = cs.clone()
    cs.fill_diagonal_(0.0)
    v = cs.max(1).values
    pardon = v[:, None] < v[None, :]
    ratio = v[:, None] / torch.where(pardon, v[None, :], 1.0)
    cs = torch.where(pardon, cs * ratio, cs)
    alpha = (1.0 - cs.max(1).values).clamp(0.0, 1.0)
    top = alpha.max()
    if top <= 0:
        return torch.zeros_like(alpha)
    alpha = alpha / top
    alpha = torch.where(alpha >= 1.0, 0.99, alpha)
    logit = kappa * (torch.log(alpha / (1.0 - alpha)) + 0.5)
    return torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)


@register("foolsgold", history=True, flora=True)
def foolsgold(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """FoolsGold (Fung et al., 2020, "The limitations of federated learning in sybil settings"): clients
    whose accumulated updates (`history`, else the current updates) are too similar to another's are
    sybils; each gets a learning rate alpha_i in [0, 1] (see `foolsgold_scores`). Aggregate = mean of the
    current updates with coefficients alpha_i * sample_weight_i, normalised (so with every alpha = 1 it is
    FedAvg). Clients with alpha = 0 are flagged; the aggregate is 0 if all are."""
    src = ctx.history if ctx.history is not None else updates
    check = None if ctx.history is not None else ctx.finite
    cs = cosine_from_gram(
        gram(src, ctx.params.chunk_elems, version=ctx.params.aggregation_version, check=check)
    )
    alpha = foolsgold_scores(cs, ctx.params.foolsgold_confidence)
    w = _normalised(alpha * weights)
    agg = weighted_sum(
        updates, w, ctx.params.chunk_elems, version=ctx.params.aggregation_version, check=ctx.finite
    )
    return _result(agg, w, alpha == 0, alpha=_floats(alpha), used_history=ctx.history is not None)


@register("fltrust", root=True)
def fltrust(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """FLTrust (Cao et al., 2021, "FLTrust: Byzantine-robust federated learning via trust bootstrapping"):
    with g0 the root update (see the module docstring for who computes it), TS_i = relu(cos(g_i, g0));
    each update is rescaled to ||g0|| and the aggregate is sum_i TS_i * g_i' / sum_i TS_i (zero if every
    TS_i is 0). Sample weights are ignored, as in the paper. `weights` = TS normalised; TS = 0 is flagged."""
    if ctx.root_update is None:
        raise ValueError("fltrust needs root_update (the update trained on the public root data set)")
    n, d = updates.shape
    root = ctx.root_update.to(updates.device)
    if ctx.params.aggregation_version >= 3:  # float32 products per fixed chunk, on one thread each
        sq, dots_v3 = row_stats_v3(updates, root, check=ctx.finite)
        dots, norms = cast(torch.Tensor, dots_v3).cpu(), sq.sqrt().cpu()
        r_norm = float(row_stats_v3(root[None, :], None)[0][0].sqrt())
    else:
        dots = torch.zeros(n, dtype=F64, device=updates.device)
        sq = torch.zeros(n, dtype=F64, device=updates.device)
        for cols in col_chunks(n, d, ctx.params.chunk_elems):
            c = updates[:, cols].to(F64)
            dots += c @ root[cols].to(F64)
            sq += (c * c).sum(1)
        if ctx.finite is not None:
            ctx.finite.cover(None, all_finite(sq))
        dots, norms = dots.cpu(), sq.sqrt().cpu()
        r = root.to(F64)
        r_norm = float((r * r).sum().sqrt())
    denom = norms * r_norm
    ts = torch.where(denom > 0, dots / torch.where(denom > 0, denom, 1.0), 0.0).clamp(0.0, 1.0)
    w = _normalised(ts)
    coef = torch.where(ts > 0, w * r_norm / torch.where(norms > 0, norms, 1.0), 0.0)
    agg = weighted_sum(
        updates, coef, ctx.params.chunk_elems, version=ctx.params.aggregation_version, check=ctx.finite
    )
    return _result(agg, w, ts == 0, trust_scores=_floats(ts), root_norm=r_norm)
