"""RLR: a per-coordinate sign vote that reverses the learning rate where the clients disagree."""

from __future__ import annotations

import torch

from consortium.defense.chunks import CACHE_ELEMS
from consortium.defense.kernels import weighted_sum
from consortium.defense.params import AggregateResult, RuleContext
from consortium.defense.registry import register
from consortium.defense.rules.common import _no_flags, _normalised, _result


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
    # Per chunk, while its columns are in cache, only the vote sums are written (one slot each, no small
    # tensor per chunk); the flips are applied to the whole [d] result at the end: negating commutes with
    # the cast to the updates' dtype (round to nearest even is symmetric), so the bits are those of
    # flipping each float64 chunk result before its cast, with ~6 small ops fewer per chunk.
    vote_dtype = torch.float32 if updates.dtype.itemsize < 4 else updates.dtype
    votes = torch.empty(d, dtype=vote_dtype, device=updates.device)

    step = max(1, CACHE_ELEMS // n)  # version 3's chunks are wider than the cache: vote in cache-sized parts

    def post(cols: slice, s: torch.Tensor) -> torch.Tensor:
        for start in range(cols.start, cols.stop, step):
            part = slice(start, min(cols.stop, start + step))
            signs = torch.sign(updates[:, part])
            if signs.dtype != vote_dtype:
                signs = signs.to(vote_dtype)  # sums of +-1 are exact in float32 up to 2^24 clients
            torch.sum(signs, 0, out=votes[part])
        return s

    w = _normalised(weights)
    agg = weighted_sum(
        updates,
        w,
        ctx.params.chunk_elems,
        version=ctx.params.aggregation_version,
        post=post,
        check=ctx.finite,
    )
    flip = votes.abs_() < thr
    agg = torch.where(flip, -agg, agg)
    flipped = int(flip.sum())
    return _result(agg, w, _no_flags(n), threshold=thr, flipped_fraction=flipped / d)
