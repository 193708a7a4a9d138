"""The registered aggregation rules: `fn(updates [n, d], weights [n], ctx) -> AggregateResult`.

Each rule is a pure, deterministic function of its inputs (FLAME's noise comes from `ctx.seed`, the round's
public randomness), so anyone can recompute an aggregate from the public records. Inputs arrive validated
by `aggregate`: `updates` is a finite floating [n, d] tensor on any device, `weights` the clients' sample
counts as a float64 CPU [n] vector (>= 0, not all zero).

Who holds FLTrust's root data set in a trustless consortium? Nobody privately: a small, clean root set is
published with the run config and pinned by its hash, so every participant and auditor can recompute the
root update. Its training run is committed as a blob like any client update, and since the root set, the
seed and the training code are public, anyone can re-run it and check the blob before the aggregate is
finalised. That keeps FLTrust's trust anchor verifiable instead of resting on an honest server. The cost:
the root set must be representative of the task (FLTrust's guarantee degrades when the root distribution
drifts from the clients'), and it is public, so it cannot contain private data.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from consortium.defense.core import (
    AggregateResult,
    RuleContext,
    closest_to_median_mean,
    col_chunks,
    cosine_from_gram,
    gram,
    median_of,
    middle_mean,
    register,
    row_norms,
    sq_dists,
    weighted_sum,
)

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


# --- averaging -------------------------------------------------------------------------------------------


@register("fedavg")
def fedavg(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """FedAvg (McMahan et al., 2017): the sample-weighted mean of the updates, accumulated in float64 so
    the result does not depend on the clients' order. No robustness; no client is flagged."""
    w = _normalised(weights)
    agg = weighted_sum(updates, w, ctx.params.chunk_elems)
    return _result(agg, w, _no_flags(len(w)))


# --- coordinate-wise -------------------------------------------------------------------------------------


@register("median")
def median(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Coordinate-wise median (Yin et al., 2018, "Byzantine-robust distributed learning: towards optimal
    statistical rates"): per coordinate the middle value, the mean of the two middle values for even n
    (as numpy.median). Unweighted: sample counts are self-reported and would let one client buy the median.
    `weights` = each client's weight per coordinate (1, or 1/2 for the two middles) averaged over
    coordinates; nobody is excluded as a whole, so no client is flagged."""
    n = updates.shape[0]
    agg, share = middle_mean(updates, (n - 1) // 2, ctx.params.chunk_elems)
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
    agg, share = middle_mean(updates, k, ctx.params.chunk_elems)
    return _result(agg, share, _no_flags(n), trimmed_per_end=k)


# --- Krum family -----------------------------------------------------------------------------------------


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

    def __init__(self, updates: torch.Tensor, f: int, chunk_elems: int) -> None:
        d2 = sq_dists(gram(updates, chunk_elems, on_device=True))
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


@register("krum")
def krum(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Krum (Blanchard et al., 2017, "Machine learning with adversaries: Byzantine tolerant gradient
    descent"): score each update by the sum of squared distances to its k = max(1, n - f - 2) nearest
    others and return the lowest-scoring update (ties: lowest client index). Pairwise distances come from
    one float64 Gram matrix. Sample weights are ignored; `weights` is one-hot, everyone else is flagged."""
    n = updates.shape[0]
    f = krum_f(n, ctx.params.f)
    sel, s, k = KrumScorer(updates, f, ctx.params.chunk_elems).best()
    w = torch.zeros(n, dtype=F64)
    w[sel] = 1.0
    flags = torch.ones(n, dtype=torch.bool)
    flags[sel] = False
    return _result(updates[sel].clone(), w, flags, f=f, neighbours=k, scores=_floats(s), selected=[sel])


@register("multi_krum")
def multi_krum(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Multi-Krum (Blanchard et al., 2017): keep the m clients with the lowest Krum scores (computed once;
    m = multi_krum_m or n - f; ties: lowest index) and return their sample-weighted mean (uniform if the
    kept clients' weights are all 0). The others are flagged."""
    n = updates.shape[0]
    f = krum_f(n, ctx.params.f)
    m = ctx.params.multi_krum_m if ctx.params.multi_krum_m is not None else n - f
    if m > n:
        raise ValueError(f"defense.multi_krum_m = {m} must be <= n = {n} (the number of clients)")
    s, k = KrumScorer(updates, f, ctx.params.chunk_elems).scores()
    keep = torch.sort(s, stable=True).indices[:m]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[keep] = True
    w = torch.where(mask, weights, 0.0)
    w = _normalised(w) if w.sum() > 0 else mask.to(F64) / m
    agg = weighted_sum(updates, w, ctx.params.chunk_elems)
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
    scorer = KrumScorer(updates, f, ctx.params.chunk_elems)
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


# --- norm-based ------------------------------------------------------------------------------------------


def _clip_factors(norms: torch.Tensor, bound: float) -> torch.Tensor:
    """min(1, bound / ||u_i||), 1 for a zero update."""
    return torch.where(norms > bound, bound / torch.where(norms > 0, norms, 1.0), 1.0)


@register("norm_bound")
def norm_bound(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Norm bounding (Sun et al., 2019, "Can you really backdoor federated learning?"): scale each update
    down to L2 norm at most M (defense.norm_bound, or the median of the clients' norms) and take the
    sample-weighted mean. Clipping bounds a client's influence but excludes nobody: no client is flagged;
    `weights` are the normalised sample weights, the clip factors are in `info`."""
    norms = row_norms(updates, ctx.params.chunk_elems)
    bound = ctx.params.norm_bound if ctx.params.norm_bound is not None else median_of(norms)
    factors = _clip_factors(norms, bound)
    w = _normalised(weights)
    agg = weighted_sum(updates, w * factors, ctx.params.chunk_elems)
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
    g = gram(updates, p.chunk_elems)
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

    agg = weighted_sum(updates, w * factors, p.chunk_elems, post=post)
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


# --- similarity-based ------------------------------------------------------------------------------------


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


@register("foolsgold")
def foolsgold(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """FoolsGold (Fung et al., 2020, "The limitations of federated learning in sybil settings"): clients
    whose accumulated updates (`history`, else the current updates) are too similar to another's are
    sybils; each gets a learning rate alpha_i in [0, 1] (see `foolsgold_scores`). Aggregate = mean of the
    current updates with coefficients alpha_i * sample_weight_i, normalised (so with every alpha = 1 it is
    FedAvg). Clients with alpha = 0 are flagged; the aggregate is 0 if all are."""
    src = ctx.history if ctx.history is not None else updates
    cs = cosine_from_gram(gram(src, ctx.params.chunk_elems))
    alpha = foolsgold_scores(cs, ctx.params.foolsgold_confidence)
    w = _normalised(alpha * weights)
    agg = weighted_sum(updates, w, ctx.params.chunk_elems)
    return _result(agg, w, alpha == 0, alpha=_floats(alpha), used_history=ctx.history is not None)


@register("fltrust")
def fltrust(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """FLTrust (Cao et al., 2021, "FLTrust: Byzantine-robust federated learning via trust bootstrapping"):
    with g0 the root update (see the module docstring for who computes it), TS_i = relu(cos(g_i, g0));
    each update is rescaled to ||g0|| and the aggregate is sum_i TS_i * g_i' / sum_i TS_i (zero if every
    TS_i is 0). Sample weights are ignored, as in the paper. `weights` = TS normalised; TS = 0 is flagged."""
    if ctx.root_update is None:
        raise ValueError("fltrust needs root_update (the update trained on the public root data set)")
    n, d = updates.shape
    root = ctx.root_update.to(updates.device)
    dots = torch.zeros(n, dtype=F64, device=updates.device)
    sq = torch.zeros(n, dtype=F64, device=updates.device)
    for cols in col_chunks(n, d, ctx.params.chunk_elems):
        c = updates[:, cols].to(F64)
        dots += c @ root[cols].to(F64)
        sq += (c * c).sum(1)
    dots, norms = dots.cpu(), sq.sqrt().cpu()
    r = root.to(F64)
    r_norm = float((r * r).sum().sqrt())
    denom = norms * r_norm
    ts = torch.where(denom > 0, dots / torch.where(denom > 0, denom, 1.0), 0.0).clamp(0.0, 1.0)
    w = _normalised(ts)
    coef = torch.where(ts > 0, w * r_norm / torch.where(norms > 0, norms, 1.0), 0.0)
    agg = weighted_sum(updates, coef, ctx.params.chunk_elems)
    return _result(agg, w, ts == 0, trust_scores=_floats(ts), root_norm=r_norm)


@register("rlr")
def rlr(updates: torch.Tensor, weights: torch.Tensor, ctx: RuleContext) -> AggregateResult:
    """Robust learning rate (Ozdayi et al., 2021, "Defending against backdoors in federated learning with
    robust learning rate"): per coordinate, if |sum_i sign(u_i)| < threshold the coordinate's learning rate
    is -1, else +1; aggregate = that vector times the sample-weighted mean. threshold = rlr_threshold or
    max(1, n // 4). The threshold must exceed the number of corrupt clients (their aligned votes on the
    backdoor coordinates, against the honest clients' near-random signs, then fall below it and those
    coordinates are reversed) yet stay below the honest agreement on useful coordinates; n // 4 assumes
    fewer than a quarter of the clients are corrupt. Every client votes, whatever its sample weight. No
    client is flagged; `info["flipped_fraction"]` is the share of coordinates whose rate was flipped."""
    n, d = updates.shape
    thr = ctx.params.rlr_threshold if ctx.params.rlr_threshold is not None else max(1, n // 4)
    if thr > n:
        raise ValueError(f"defense.rlr_threshold = {thr} must be <= n = {n} (the number of clients)")
    flipped: list[int] = []  # one count per chunk (list.append is thread-safe), no tensor kept

    def post(cols: slice, s: torch.Tensor) -> torch.Tensor:
        signs = torch.sign(updates[:, cols])
        if signs.dtype.itemsize < 4:
            signs = signs.float()  # sums of +-1 are exact in float32 up to 2^24 clients
        flip = signs.sum(0).abs() < thr
        flipped.append(int(flip.sum()))
        return torch.where(flip, -s, s)

    w = _normalised(weights)
    agg = weighted_sum(updates, w, ctx.params.chunk_elems, post=post)
    return _result(agg, w, _no_flags(n), threshold=thr, flipped_fraction=sum(flipped) / d)
