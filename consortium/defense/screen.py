"""Screening before aggregation: public, deterministic checks that catch updates with no training in them.

Robust aggregators look for updates far from the others; a free rider's update is the opposite, empty
or a replay of the last global step (public), and Krum-style rules even prefer it because it sits close
to everyone. Two checks, both pure functions of the committed updates and the last global step:
- an update shorter than `min_norm` x the median update norm;
- an update whose cosine with the last global step is at least `stale_cosine`.

Both are computed in float64 without a float64 copy of all the updates: the norms in blocks of rows (the
same bits as one call over all rows), the cosines first as a cheap chunked bound; only an update whose
cosine may reach `stale_cosine` gets the exact dot product the screen has always used.
"""

from __future__ import annotations

import torch

from consortium.defense.core import CACHE_ELEMS, exact_row_norms, map_chunks, work_chunks

F64 = torch.float64


def approx_dots(x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """x @ last in float64, summed over cache-sized column chunks: within d * 2^-52 * |x| |last| of the
    exact dot product (products of float32 are exact in float64; each sum of d terms errs by at most
    that), which is all the screen needs to clear an update."""
    chunks = work_chunks(x, x.shape[0], CACHE_ELEMS)
    parts = map_chunks(x, chunks, lambda cols: x[:, cols].to(F64) @ last[cols])
    return torch.stack(parts).sum(0) if parts else torch.zeros(x.shape[0], dtype=F64, device=x.device)


def screen(
    updates: torch.Tensor, last_step: torch.Tensor | None, min_norm: float, stale_cosine: float
) -> dict[int, str]:
    """Row index -> why the update is screened out. `min_norm = 0` and `stale_cosine > 1` turn a check off."""
    if updates.shape[0] == 0:
        return {}
    x = updates.detach()
    norms = exact_row_norms(x)
    median = float(norms.median())
    last = None if last_step is None else last_step.detach().to(x.device).double()
    last_norm = 0.0 if last is None else float(last.norm())
    cos_check = last is not None and last_norm > 0
    if cos_check:
        dots = approx_dots(x, last).cpu()
        margin = 8 * x.shape[1] * 2.0**-53 + 1e-12  # twice the bound on each of two float64 dot products
    out: dict[int, str] = {}
    for i in range(x.shape[0]):
        n = float(norms[i])
        if min_norm > 0 and n <= min_norm * median:
            out[i] = f"update norm {n:.3g} is at most {min_norm:g} x the median {median:.3g}"
        elif cos_check and n > 0:
            if float(dots[i]) / (n * last_norm) < stale_cosine - margin:
                continue  # cannot reach the threshold: the exact product is not needed
            cos = float(torch.dot(x[i].double(), last) / (n * last_norm))
            if cos >= stale_cosine:
                out[i] = f"update replays the last global step (cosine {cos:.4f})"
    return out
