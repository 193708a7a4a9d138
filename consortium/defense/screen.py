"""Screening before aggregation: public, deterministic checks that catch updates with no training in them.

Robust aggregators look for updates far from the others; a free rider's update is the opposite, empty
or a replay of the last global step (public), and Krum-style rules even prefer it because it sits close
to everyone. Two checks, both pure functions of the committed updates and the last global step:
- an update shorter than `min_norm` x the median update norm;
- an update whose cosine with the last global step is at least `stale_cosine`.

The figures are float64 norms (`x.double().norm(dim=1)`) and dot products (`torch.dot`), as always, but
without a float64 copy of the updates and mostly without computing them: one chunked pass gives every
norm and dot product within a proven interval (`Bounds`), which settles most comparisons; the exact figure
is computed only for an update the interval leaves open (near a threshold) or that is screened out (its
message prints it), and the exact median only when some update's interval comes near min_norm x the
median (usually none does: then no exact norm is computed at all). So the verdicts and messages are the
ones the exact figures give.
For float32 updates on the CPU that pass stays in float32 (no conversion; intervals ~1e-4 wide), for other
dtypes and devices it runs in float64 (intervals ~d * 2^-53 wide).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from consortium.defense.core import CACHE_ELEMS, exact_norms_of, map_chunks, work_chunks

F64 = torch.float64
F32_WIDTH = 4096
"""Most columns per chunk of the float32 pass: its bound grows with the chunk's width, and a wider interval
leaves more rows to compute exactly (each costs a float64 copy of the row). The cache-sized chunk alone is
13,000 columns wide at n = 10; much narrower, the chunks' fixed costs dominate (measured at n = 10,
d = 1M, one thread: 7.0x one pass uncapped, 5.2x at 4096 columns, 8.7x at 1024; at n = 100 the cap does
not bind, the chunks being 1310 columns wide)."""


@dataclass
class Bounds:
    """Per row, float64 on the CPU: lo <= exact norm <= hi, and exact dot with the last step <= dot_hi.
    None when a pass met NaN, Inf or an overflow (no bound holds)."""

    lo: torch.Tensor
    hi: torch.Tensor
    dot_hi: torch.Tensor


def bounds_float64(x: torch.Tensor, last: torch.Tensor | None) -> Bounds | None:
    """Squared row norms and x @ last in float64, summed over cache-sized column chunks.

    Products of float32 are exact in float64 and a float64 sum of d terms errs by at most
    d * 2^-53 * (the sum of their magnitudes), so both are that close to the exact figures (the dot's sum
    of magnitudes is at most ||x|| ||last|| by Cauchy-Schwarz)."""
    n, d = x.shape
    chunks = work_chunks(x, n, CACHE_ELEMS)
    parts = torch.zeros(len(chunks), 2, n, dtype=F64, device=x.device)

    def work(i: int, cols: slice) -> None:
        c = x[:, cols].to(F64, copy=True)
        if last is not None:
            parts[i, 1] = c @ last[cols]
        parts[i, 0] = c.square_().sum(1)

    map_chunks(x, chunks, work)
    sq, dots = parts.sum(0).cpu()
    if not bool(torch.isfinite(sq).all()):
        return None
    rel = 4 * d * 2.0**-53 + 1e-12  # norms: the approximate and the exact one each within d * 2^-53
    approx = sq.sqrt()
    lo, hi = approx * (1 - rel), approx * (1 + rel)
    last_norm = 0.0 if last is None else float(last.norm())
    return Bounds(lo, hi, dots + 4 * rel * hi * last_norm)


def bounds_float32(x: torch.Tensor, last: torch.Tensor | None) -> Bounds | None:
    """The same intervals from float32 work on float32 updates: per cache-sized chunk of m columns, the
    float32 norm of each row's part and its float32 product with the last step (rounded to float32),
    then the chunks' figures summed in float64.

    Error bound (torch's float32 norm and matrix-vector product accumulate in float32, in some order,
    without scaling): a float32 sum of m products, in any order, errs by at most gamma * (the sum of their
    magnitudes) with gamma = k * 2^-24 / (1 - k * 2^-24), k = m + 1; rounding the result, the norm's square
    root and the last step's float32 copy add 2^-24 each (k = m + 3 covers them), and the dot products'
    magnitudes sum to at most |x| |last| by Cauchy-Schwarz. Entries too small for float32 products
    (underflow) add at most 2^-149 per product. The exact figures are float64 sums themselves, within
    d * 2^-53 of the true ones: that is added too.
    """
    n = x.shape[0]
    chunks = work_chunks(x, n, min(CACHE_ELEMS, n * F32_WIDTH))
    m = max(c.stop - c.start for c in chunks)
    parts = torch.zeros(len(chunks), 2, n, dtype=torch.float32, device=x.device)
    last32 = None if last is None else last.to(torch.float32)

    def work(i: int, cols: slice) -> None:
        block = x[:, cols]
        if last32 is not None:
            parts[i, 1] = block @ last32[cols]
        parts[i, 0] = torch.linalg.vector_norm(block, dim=1)

    map_chunks(x, chunks, work)
    parts = parts.to(F64).cpu()
    norms, dots = parts[:, 0], parts[:, 1]
    if not bool(torch.isfinite(norms).all()):
        return None
    d = x.shape[1]
    k = m + 3
    g = k * 2.0**-24 / (1 - k * 2.0**-24) + 4 * d * 2.0**-53 + 1e-12
    tiny = 2 * d * 2.0**-149
    sq = norms.square().sum(0)  # float64 squares of float32 values are exact
    lo = (sq * (1 - g) - tiny).clamp_min(0.0).sqrt()
    hi = (sq * (1 + g) + tiny).sqrt()
    last_norm = 0.0 if last is None else float(last.norm())
    tiny_dot = tiny + hi * d**0.5 * 2.0**-149  # + the last step's entries too small for float32
    return Bounds(lo, hi, dots.sum(0) + g * (1 + 1e-6) * hi * last_norm + tiny_dot)


def kth_exact(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, k: int) -> float:
    """The k-th smallest (0-based) exact row norm, from intervals lo <= norm <= hi.

    Only rows whose interval meets the k-th order statistic's interval can hold it; those are computed
    exactly two at a time (the pair nearest that interval's middle first), each exact norm collapsing its
    interval, until every row left meeting it is exact. Then the rows wholly below it are counted and
    the k-th is read off the exact ones."""
    lo, hi = lo.clone(), hi.clone()
    known: dict[int, float] = {}
    while True:
        low_k, high_k = float(torch.sort(lo).values[k]), float(torch.sort(hi).values[k])
        cand = [i for i in range(len(lo)) if float(lo[i]) <= high_k and float(hi[i]) >= low_k]
        todo = [i for i in cand if i not in known]
        if not todo:
            break
        mid = (low_k + high_k) / 2
        todo.sort(key=lambda i: abs(float(lo[i] + hi[i]) / 2 - mid))
        for i, v in exact_norms_of(x, todo[:2]).items():
            known[i] = v
            lo[i] = hi[i] = v
    below = int((hi < low_k).sum())  # exact norm below the k-th for certain
    return sorted(known[i] for i in cand)[k - below]


def screen(
    updates: torch.Tensor, last_step: torch.Tensor | None, min_norm: float, stale_cosine: float
) -> dict[int, str]:
    """Row index -> why the update is screened out. `min_norm = 0` and `stale_cosine > 1` turn a check off."""
    if updates.shape[0] == 0:
        return {}
    x = updates.detach()
    n_rows = x.shape[0]
    last = None if last_step is None else last_step.detach().to(x.device).double()
    last_norm = 0.0 if last is None else float(last.norm())
    use = last if last is not None and last_norm > 0 else None
    fast = x.device.type == "cpu" and x.dtype == torch.float32
    b = bounds_float32(x, use) if fast else bounds_float64(x, use)
    exact: dict[int, float] = {}

    def norm(i: int) -> float:
        if i not in exact:
            exact.update(exact_norms_of(x, [i]))
        return exact[i]

    k = (n_rows - 1) // 2
    median: float | None = None
    if b is None:  # NaN / Inf / overflow: no bound holds, the exact way for every row
        exact.update(exact_norms_of(x, range(n_rows)))
        median = float(torch.tensor([exact[i] for i in range(n_rows)], dtype=F64).median())
    elif min_norm > 0 and not bool((b.lo > min_norm * float(torch.sort(b.hi).values[k])).all()):
        median = kth_exact(x, b.lo, b.hi, k)
    # else every row's norm is above min_norm x any median its interval allows (the k-th smallest exact
    # norm is at most the k-th smallest upper bound, and fl(min_norm * m) grows with m): no row can be
    # screened for its length, and the median, which only that message prints, is not needed
    threshold = None if median is None else min_norm * median
    out: dict[int, str] = {}
    for i in range(n_rows):
        lo = float(b.lo[i]) if b is not None else float("nan")
        if min_norm > 0 and threshold is not None and not lo > threshold and norm(i) <= threshold:
            n = norm(i)
            out[i] = f"update norm {n:.3g} is at most {min_norm:g} x the median {median:.3g}"
            continue
        if last is None or last_norm <= 0 or not (lo > 0 or norm(i) > 0):
            continue
        if lo > 0 and float(b.dot_hi[i]) < stale_cosine * lo * last_norm:
            continue  # cosine <= dot_hi / (lo * |last|) < the threshold: the exact product is not needed
        n = norm(i)
        cos = float(torch.dot(x[i].double(), last) / (n * last_norm))
        if cos >= stale_cosine:
            out[i] = f"update replays the last global step (cosine {cos:.4f})"
    return out
