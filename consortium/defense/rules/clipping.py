"""Norm-based rules: norm bounding and FLAME (clustering, clipping to the median norm, noise)."""

from __future__ import annotations

from typing import Any

import torch

from consortium.defense.kernels import cosine_from_gram, gram, median_of, row_norms, weighted_sum
from consortium.defense.params import AggregateResult, RuleContext
from consortium.defense.registry import register
from consortium.defense.rules.common import F64, _floats, _no_flags, _normalised, _result


def _clip_factors(norms: torch.Tensor, bound: float) -> torch.Tensor:
    """min(1, bound / ||u_i||), 1 for a zero update."""
    return torch.where(norms > bound, bound / torch.where(norms > 0, norms, 1.0), 1.0)


@register("norm_bound")
def norm_bound(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Norm bounding (Sun et al., 2019, "Can you really backdoor federated learning?"): scale each update
    down to L2 norm at most M (defense.norm_bound, or the median of the clients' norms) and take the
    sample-weighted mean. Clipping bounds a client's influence but excludes nobody: no client is flagged;
    `weights` are the normalised sample weights, the clip factors are in `info`."""
    norms = row_norms(
        updates, ctx.params.chunk_elems, version=ctx.params.aggregation_version, check=ctx.finite
    )
    bound = ctx.params.norm_bound if ctx.params.norm_bound is not None else median_of(norms)
    factors = _clip_factors(norms, bound)
    w = _normalised(weights)
    agg = weighted_sum(
        updates, w * factors, ctx.params.chunk_elems, version=ctx.params.aggregation_version, check=ctx.finite
    )
    return _result(agg, w, _no_flags(len(w)), bound=float(bound), clip_factors=_floats(factors))


@register("flame")
def flame(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """FLAME (Nguyen et al., 2022, "FLAME: taming backdoors in federated learning"): cluster the updates by
    cosine distance with HDBSCAN (min_cluster_size = flame_min_cluster_size or n // 2 + 1, min_samples=1,
    allow_single_cluster) and admit the largest cluster (noise points are rejected; if there is no
    cluster at all, everyone is admitted and `info["clustered"]` is False). Admitted updates are clipped
    to S = the median L2 norm of ALL updates and averaged UNIFORMLY, as in the paper (self-reported sample
    counts would let an admitted attacker claim more weight); then Gaussian noise of std flame_noise * S
    is added, drawn on the CPU from `seed` so that every device adds the same noise. Cosine distances come
    from one float64 Gram matrix; the clustering runs on the CPU. Rejected clients are flagged.

    Note HDBSCAN's labelling when the admitted cluster is the root of its hierarchy (typical with the
    default min_cluster_size, where the attackers are too few to form a cluster of their own): only the
    points still in the cluster when it shrinks below min_cluster_size are members, so benign updates on
    the cluster's edge are rejected too (e.g. 7 benign + 3 attackers, n // 2 + 1 = 6: 6 benign admitted).
    That is the behaviour of FLAME's own HDBSCAN set-up, kept for fidelity; a smaller min_cluster_size
    lets the attackers form a separate cluster and admits every benign update."""
    n, d = updates.shape
    p = ctx.params
    mcs = p.flame_min_cluster_size if p.flame_min_cluster_size is not None else n // 2 + 1
    if mcs > n and p.flame_min_cluster_size is not None:
        raise ValueError(f"defense.flame_min_cluster_size = {mcs} must be <= n = {n} (the number of clients)")
    g = gram(updates, p.chunk_elems, version=p.aggregation_version, check=ctx.finite)
    norms = torch.diagonal(g).clamp_min(0.0).sqrt()
    s_bound = median_of(norms)
    labels = [0] * n
    clustered = n >= 2
    if clustered:
        from sklearn.cluster import HDBSCAN  # slow import; only FLAME needs it

        dist = (1.0 - cosine_from_gram(g)).clamp(0.0, 2.0)
        dist.fill_diagonal_(0.0)
        kw: dict[str, Any] = {"metric": "precomputed", "min_samples": 1, "allow_single_cluster": True}
        if "copy" in HDBSCAN().get_params():
            kw["copy"] = True  # our own array either way; explicit to silence sklearn's FutureWarning
        hdb = HDBSCAN(min_cluster_size=max(2, mcs), **kw).fit(dist.numpy())
        labels = [int(v) for v in hdb.labels_]
    lab = torch.tensor(labels, dtype=torch.long)
    if (lab >= 0).any():
        sizes = torch.bincount(lab[lab >= 0])
        biggest = int(torch.sort(-sizes, stable=True).indices[0])  # ties: lowest label
        admitted = lab == biggest
    else:
        admitted = torch.ones(n, dtype=torch.bool)
        clustered = False
    factors = _clip_factors(norms, s_bound)
    w = admitted.to(F64) / int(admitted.sum())
    std = p.flame_noise * s_bound
    post = None
    if std > 0:
        gen = torch.Generator(device="cpu").manual_seed(ctx.seed % (1 << 64))
        noise = torch.randn(d, generator=gen, dtype=F64).mul_(std)

        def post(cols: slice, s: torch.Tensor) -> torch.Tensor:
            return s + noise[cols].to(s.device)

    agg = weighted_sum(
        updates, w * factors, p.chunk_elems, version=p.aggregation_version, post=post, check=ctx.finite
    )
    return _result(
        agg,
        w,
        ~admitted,
        clustered=clustered,
        labels=labels,
        min_cluster_size=mcs,
        clip_bound=float(s_bound),
        clip_factors=_floats(factors),
        noise_std=float(std),
    )
