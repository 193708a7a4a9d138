"""Screening before aggregation: public, deterministic checks that catch updates with no training in them.

Robust aggregators look for updates far from the others; a free rider's update is the opposite, empty
or a replay of the last global step (public), and Krum-style rules even prefer it because it sits close
to everyone. Two checks, both pure functions of the committed updates and the last global step:
- an update shorter than `min_norm` x the median update norm;
- an update whose cosine with the last global step is at least `stale_cosine`.

The figures are float64 norms (`x.double().norm(dim=1)`) and dot products (`torch.dot`), as always, but
without a float64 copy of the updates and mostly without computing them: one chunked pass gives every
norm and cosine to within a proven bound, which settles most comparisons; the exact figure is computed
only for an update the bound leaves open (the median, near a threshold) or that is screened out (its
message prints it). So the verdicts and messages are the ones the exact figures give.
"""

from __future__ import annotations

import torch

from consortium.defense.core import CACHE_ELEMS, exact_norms_of, map_chunks, work_chunks

F64 = torch.float64


def approx_norms_and_dots(x: torch.Tensor, last: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared row norms and x @ last in float64, summed over cache-sized column chunks, on the CPU.

    Products of float32 are exact in float64 and a float64 sum of d terms errs by at most
    d * 2^-53 * (the sum of their magnitudes), so both are that close to the exact figures."""
    n = x.shape[0]

    chunks = work_chunks(x, n, CACHE_ELEMS)
    parts = torch.zeros(len(chunks), 2, n, dtype=F64, device=x.device)

    def work(i: int, cols: slice) -> None:
        c = x[:, cols].to(F64, copy=True)
        if last is not None:
            parts[i, 1] = c @ last[cols]
        parts[i, 0] = c.square_().sum(1)

    map_chunks(x, chunks, work)
    total = parts.sum(0).cpu()
    return total[0], total[1]


def kth_exact(x: torch.Tensor, approx: torch.Tensor, rel: float, k: int) -> float:
    """The k-th smallest (0-based) exact row norm, from approximate ones within relative `rel`: only the
    rows whose interval meets the k-th order statistic's interval are computed exactly."""
    lo, hi = approx * (1 - rel), approx * (1 + rel)
    low_k, high_k = float(torch.sort(lo).values[k]), float(torch.sort(hi).values[k])
    below = int((hi < low_k).sum())  # exact norm below the k-th for certain
    cand = [i for i in range(len(approx)) if float(lo[i]) <= high_k and float(hi[i]) >= low_k]
    exact = sorted(exact_norms_of(x, cand).values())
    return exact[k - below]


def screen(
    updates: torch.Tensor, last_step: torch.Tensor | None, min_norm: float, stale_cosine: float
) -> dict[int, str]:
    """Row index -> why the update is screened out. `min_norm = 0` and `stale_cosine > 1` turn a check off."""
    if updates.shape[0] == 0:
        return {}
    x = updates.detach()
    n_rows, d = x.shape
    last = None if last_step is None else last_step.detach().to(x.device).double()
    last_norm = 0.0 if last is None else float(last.norm())
    sq, dots = approx_norms_and_dots(x, last if last is not None and last_norm > 0 else None)
    approx = sq.sqrt()
    if not bool(torch.isfinite(sq).all()):  # NaN / Inf / overflow: no bound holds, compute everything
        approx = torch.full_like(sq, float("nan"))
    rel = 4 * d * 2.0**-53 + 1e-12  # norms: the approximate and the exact one each within d * 2^-53
    cos_margin = 4 * rel
    median = kth_exact(x, approx, rel, (n_rows - 1) // 2) if bool(torch.isfinite(approx).all()) else None
    exact: dict[int, float] = {}

    def norm(i: int) -> float:
        if i not in exact:
            exact.update(exact_norms_of(x, [i]))
        return exact[i]

    if median is None:  # the slow, exact way for every row
        exact.update(exact_norms_of(x, range(n_rows)))
        median = float(torch.tensor([exact[i] for i in range(n_rows)], dtype=F64).median())
    threshold = min_norm * median
    out: dict[int, str] = {}
    for i in range(n_rows):
        a = float(approx[i])
        if min_norm > 0 and not a * (1 - rel) > threshold and norm(i) <= threshold:
            n = norm(i)
            out[i] = f"update norm {n:.3g} is at most {min_norm:g} x the median {median:.3g}"
            continue
        if last is None or last_norm <= 0 or not (a > 0 or norm(i) > 0):
            continue
        if a > 0 and float(dots[i]) / (a * last_norm) < stale_cosine - cos_margin:
            continue  # cannot reach the threshold: the exact product is not needed
        n = norm(i)
        cos = float(torch.dot(x[i].double(), last) / (n * last_norm))
        if cos >= stale_cosine:
            out[i] = f"update replays the last global step (cosine {cos:.4f})"
    return out
