"""Order statistics per coordinate: the median / trimmed mean (`middle_mean`) and Bulyan's second stage
(`closest_to_median_mean`), with each client's share of the kept values.

Each column is computed on its own, so on the CPU the chunks are cache-sized and their values sorted with
numpy (`sorted_rows`); which client holds a kept value is counted by thresholds (`kept_counts`), falling
back to torch's stable sort only where ties make that ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from consortium.defense.chunks import col_chunks, map_chunks, work_chunks
from consortium.defense.finite import FiniteCheck


def _fast_sort(x: torch.Tensor) -> bool:
    """Can the coordinate-wise rules sort with numpy? Float32/64 CPU tensors, numpy importable."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    try:
        import numpy  # noqa: F401  (a dependency of consortium; a bare GPU box may lack it)
    except ImportError:
        return False
    return True


def sorted_rows(t: torch.Tensor) -> torch.Tensor:
    """Each row of a contiguous CPU [c, m] float32/64 tensor sorted ascending, values only.

    numpy's sort (SIMD quicksort) is about 20x faster than torch.sort here. The values come out exactly
    as any other ascending sort would give them: equal values are equal bits, except -0.0 and +0.0,
    whose order among themselves is not fixed; the sums taken over sorted values start from +0.0, so that
    order cannot change them (and client shares are counted by `kept_counts`, not from this order)."""
    import numpy as np  # optional here: a bare GPU box may lack it (`_fast_sort` checked it is there)

    return torch.from_numpy(np.sort(t.numpy(), axis=1))


def kept_counts(
    block: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    kept: int,
    stable_cols: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Per row of `block` [m, c], in how many columns its value is among the `kept` sorted positions whose
    values run from lo to hi (per column, [c]), as a stable sort (ties in row order) would pick them.

    Where exactly `kept` values of a column lie in [lo, hi], those are the kept ones, whatever the ties;
    the other columns (a tie straddles lo or hi) go to `stable_cols(column_mask) -> counts [m]`, which
    sorts them stably as the rules always did. Integer counts, so the shares are bit-identical."""
    inside = (block >= lo) & (block <= hi)
    simple = inside.sum(0, dtype=torch.int32) == kept
    if bool(simple.all()):
        return inside.sum(1)
    return inside[:, simple].sum(1) + stable_cols(~simple)


def middle_mean(
    x: torch.Tensor, k: int, chunk_elems: int, check: FiniteCheck | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate, the mean of the sorted values at positions k .. n-k-1.

    k = (n - 1) // 2 is the median (mean of the two middle values for even n); other k is the trimmed mean.
    Returns the [d] result in x's dtype (the mean taken in float64) and each client's share (float64 CPU
    [n]): its weight in a coordinate (1 / (n - 2k) when kept) averaged over the coordinates. Equal values
    are kept in client order (a stable sort); that only affects the shares. Each column is computed on its
    own, so on the CPU the chunks are cache-sized (and sorted with `sorted_rows`). Every row is covered for
    `check`: numpy's sort puts NaN last, so a column is finite exactly when its first and last sorted values
    are.
    """
    n, d = x.shape
    kept = n - 2 * k
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    fast = _fast_sort(x)

    def stable_counts(idx: torch.Tensor) -> torch.Tensor:
        """Counts from the stable sort's indices [c, n]."""
        if kept <= 2 * k:  # count the kept entries, or the trimmed ones, whichever are fewer
            return torch.bincount(idx[:, k : n - k].flatten(), minlength=n)
        cut = torch.cat([idx[:, :k], idx[:, n - k :]], 1).flatten()
        return idx.shape[0] - torch.bincount(cut, minlength=n)

    chunks = work_chunks(x, n, chunk_elems) if fast else list(col_chunks(n, d, chunk_elems))
    parts = torch.zeros(len(chunks), n, dtype=torch.long, device=x.device)
    finite = torch.ones(len(chunks), dtype=torch.bool, device=x.device)

    def work(i: int, cols: slice) -> None:
        t = x[:, cols].T.contiguous()  # [c, n]
        if fast:
            s = sorted_rows(t)

            def stable_cols(mask: torch.Tensor) -> torch.Tensor:
                return stable_counts(torch.sort(t[mask], dim=1, stable=True).indices)

            part = kept_counts(x[:, cols], s[:, k], s[:, n - k - 1], kept, stable_cols)
        else:
            s, idx = torch.sort(t, dim=1, stable=True)
            part = stable_counts(idx)
        out[cols] = (s[:, k : n - k].to(torch.float64).sum(1) / kept).to(x.dtype)
        parts[i] = part
        if check is not None:
            ends = s[:, [0, -1]] if fast else s  # numpy's sort puts NaN last; torch's is checked whole
            finite[i] = torch.isfinite(ends).all()

    map_chunks(x, chunks, work)
    if check is not None:
        check.cover(None, bool(finite.all()))
    counts = parts.sum(0)  # integers: any order
    return out, (counts.cpu().to(torch.float64) / (kept * d))


def closest_to_median_mean(
    x: torch.Tensor, beta: int, chunk_elems: int, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bulyan's second stage: per coordinate, the mean of the `beta` values (among `rows`) closest to the
    median of those rows; equal distances go to the smaller value. Returns ([d] in x's dtype, shares [n]).

    Along the sorted values the distance to the median falls then rises, so the beta closest values are a
    window of the sorted order and the farthest remaining value is always at one end of a window. The
    window is found without a second sort: grown from the middle (beta - 1 steps, taking the nearer
    neighbour, the left one on ties) or shrunk from the full range (m - beta steps, dropping the farther
    end, the right one on ties), whichever takes fewer steps, vectorised over the coordinates. Which
    client holds a window value (ties: client order) is counted as in `middle_mean`.
    """
    n, d = x.shape
    m = rows.numel()
    out = torch.empty(d, dtype=x.dtype, device=x.device)
    rows_dev = rows.to(x.device)
    span = torch.arange(beta, device=x.device)
    grow = beta - 1 <= m - beta
    fast = _fast_sort(x)

    chunks = work_chunks(x, m, chunk_elems) if fast else list(col_chunks(m, d, chunk_elems))
    parts = torch.zeros(len(chunks), n, dtype=torch.float64, device=x.device)

    def work(i: int, cols: slice) -> None:
        block = x[rows_dev, cols] if m < n else x[:, cols]  # [m, c]; rows is sorted
        t = block.T.contiguous()  # [c, m]
        if fast:
            s, idx = sorted_rows(t), None
        else:
            s, idx = torch.sort(t, dim=1, stable=True)
        s64 = s.to(torch.float64)
        a, b = (m - 1) // 2, m // 2
        dist = (s64 - ((s64[:, a] + s64[:, b]) * 0.5)[:, None]).abs()

        def at(pos: torch.Tensor) -> torch.Tensor:
            return dist.gather(1, pos[:, None]).squeeze(1)

        if grow:
            lo = torch.where(dist[:, b] < dist[:, a], b, a)
            hi = lo.clone()
            for _ in range(beta - 1):
                nearer = at((lo - 1).clamp_min(0)) <= at((hi + 1).clamp_max(m - 1))
                left = (lo > 0) & ((hi == m - 1) | nearer)
                lo, hi = lo - left.long(), hi + (~left).long()
        else:
            lo = torch.zeros(s.shape[0], dtype=torch.long, device=x.device)
            hi = torch.full_like(lo, m - 1)
            for _ in range(m - beta):
                drop_hi = at(hi) >= at(lo)
                lo, hi = lo + (~drop_hi).long(), hi - drop_hi.long()
        window = lo[:, None] + span  # [c, beta]
        out[cols] = (s64.gather(1, window).sum(1) / beta).to(x.dtype)
        if idx is not None:
            parts[i] = torch.bincount(rows_dev[idx.gather(1, window).flatten()], minlength=n)
            return

        def stable_cols(mask: torch.Tensor) -> torch.Tensor:
            i = torch.sort(t[mask], dim=1, stable=True).indices
            return torch.bincount(i.gather(1, window[mask]).flatten(), minlength=m)

        lo_v, hi_v = s.gather(1, lo[:, None]).squeeze(1), s.gather(1, window[:, -1:]).squeeze(1)
        per_row = kept_counts(block, lo_v, hi_v, beta, stable_cols)
        parts[i].index_add_(0, rows_dev, per_row.to(torch.float64))

    map_chunks(x, chunks, work)
    counts = parts.sum(0)  # integer-valued: any order
    return out, (counts / (beta * d)).cpu()
