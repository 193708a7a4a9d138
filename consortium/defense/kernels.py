"""The [n, d] kernels of the rules that are not order statistics: the float64 Gram matrix, row norms,
weighted sums.

Each reads the updates in column chunks on their device; small results ([n], [n, n]) come back to the CPU
in float64, so a rule's selection logic does not depend on the device.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

from consortium.defense.chunks import col_chunks, map_chunks, row_blocks, work_chunks
from consortium.defense.finite import FiniteCheck, all_finite
from consortium.defense.gram_v2 import gram_v2
from consortium.defense.sums_v3 import row_norms_v3, weighted_sum_v3


def gram(
    x: torch.Tensor,
    chunk_elems: int,
    *,
    version: int = 1,
    on_device: bool = False,
    check: FiniteCheck | None = None,
) -> torch.Tensor:
    """X X^T in float64, accumulated over column chunks, symmetrised exactly; on the CPU unless
    `on_device` (then on x's device). Its diagonal (squared norms) covers every row for `check`.
    `version` is the run's aggregation version: 2 and 3 are `gram_v2` (float32 products, `chunk_elems`
    unused).

    On the CPU each chunk is converted into one float64 buffer allocated once (a fresh [n, chunk] block
    per chunk, 512 MiB at the default size, faulted its pages in every time); the product runs on the
    same contiguous [n, chunk] values as before, so it gives the same bits."""
    if version in (2, 3):
        return gram_v2(x, on_device=on_device, check=check)
    if version != 1:
        raise ValueError(f"aggregation version {version}: the Gram matrix is defined for versions 1 to 3")
    n, d = x.shape
    g = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    flat = None
    if x.device.type == "cpu":
        flat = torch.empty(n * min(d, max(1, chunk_elems // max(1, n))), dtype=torch.float64)
    for cols in col_chunks(n, d, chunk_elems):
        if flat is None:
            c = x[:, cols].to(torch.float64)
        else:
            c = flat[: n * (cols.stop - cols.start)].view(n, cols.stop - cols.start)
            c.copy_(x[:, cols])
        g += c @ c.T
        del c  # before the next chunk's copy: one [n, chunk] float64 block alive, not two
    del flat
    if check is not None:
        check.cover(None, all_finite(torch.diagonal(g)))
    if not on_device:
        g = g.cpu()
    return (g + g.T) * 0.5


def sq_dists(g: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances ||x||^2 + ||y||^2 - 2 x.y from a Gram matrix, clamped >= 0."""
    sq = torch.diagonal(g)
    return (sq[:, None] + sq[None, :] - 2.0 * g).clamp_min(0.0)


def cosine_from_gram(g: torch.Tensor) -> torch.Tensor:
    """Cosine similarities from a Gram matrix; a zero vector has similarity 0 to everything."""
    norms = torch.diagonal(g).clamp_min(0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, g / torch.where(denom > 0, denom, 1.0), 0.0).clamp(-1.0, 1.0)


def row_norms(
    x: torch.Tensor, chunk_elems: int, *, version: int = 1, check: FiniteCheck | None = None
) -> torch.Tensor:
    """L2 norm of each row, accumulated in float64 over column chunks; on the CPU. Covers every row for
    `check`. Aggregation version 3 is `row_norms_v3` (float32 squares per fixed chunk); 1 and 2 are this."""
    if version >= 3:
        return row_norms_v3(x, check=check)
    n, d = x.shape
    if x.device.type != "cpu":  # as it always ran there: a GPU reduction's bits depend on its shape
        acc = torch.zeros(n, dtype=torch.float64, device=x.device)
        for cols in col_chunks(n, d, chunk_elems):
            c = x[:, cols].to(torch.float64)
            acc += (c * c).sum(1)
        if check is not None:
            check.cover(None, all_finite(acc))
        return acc.sqrt().cpu()
    # The column chunks fix the summation order (the bits); within one, rows go in blocks so the float64
    # copy is a few rows, not [n, chunk]. A row's sum is the same in any block of >= 2 rows (torch splits a
    # reduction over its rows, or runs it serially; only a lone row is split along its length). Each
    # thread converts into one buffer of its own, allocated once, viewed contiguous at each block's shape.
    tasks = [
        (rows, cols)
        for cols in col_chunks(n, d, chunk_elems)
        for rows in row_blocks(n, cols.stop - cols.start)
    ]
    size = max((r.stop - r.start) * (c.stop - c.start) for r, c in tasks)
    local = threading.local()
    parts = torch.zeros(len(tasks), n, dtype=torch.float64, device=x.device)

    def work(i: int, task: tuple[slice, slice]) -> None:
        rows, cols = task
        flat = getattr(local, "buf", None)
        if flat is None:
            flat = local.buf = torch.empty(size, dtype=torch.float64)
        c = flat[: (rows.stop - rows.start) * (cols.stop - cols.start)].view(
            rows.stop - rows.start, cols.stop - cols.start
        )
        c.copy_(x[task])
        parts[i, rows] = c.square_().sum(1)

    map_chunks(x, tasks, work)
    acc = torch.zeros(n, dtype=torch.float64, device=x.device)
    for i, (rows, _) in enumerate(tasks):
        acc[rows] += parts[i, rows]  # chunk by chunk, in column order, as always
    if check is not None:
        check.cover(None, all_finite(acc))
    return acc.sqrt().cpu()


def exact_row_norms(x: torch.Tensor) -> torch.Tensor:
    """`x.double().norm(dim=1)` bit for bit, without a float64 copy of all of x (see `exact_norms_of`).
    For the screen and DP clipping, which have always used that norm."""
    got = _exact_norms(x, list(range(x.shape[0])))
    return torch.cat([got[r] for r in range(x.shape[0])])


def exact_norms_of(x: torch.Tensor, rows: Sequence[int]) -> dict[int, float]:
    """{row: `x.double().norm(dim=1)[row]`} bit for bit, computing only those rows."""
    got = _exact_norms(x, sorted(set(rows)))
    return {r: float(got[r]) for r in rows}


def _exact_norms(x: torch.Tensor, want: list[int]) -> dict[int, torch.Tensor]:
    """Torch reduces each row on its own whenever a call has >= 2 rows, so rows go in pairs through one
    reused [2, d] float64 buffer per thread (a fresh buffer each time would fault its pages in again and
    leave the allocator holding them). A single-row x is reduced as one row, as before."""
    n, d = x.shape
    if n == 1 or x.device.type != "cpu":  # one row, or a GPU (whose bits depend on the shape): as always
        norms = x.to(torch.float64).norm(dim=1)
        return {r: norms[r : r + 1] for r in want}
    want = list(want)
    if len(want) % 2:  # pad with any other row: a lone row would be summed differently
        want.append(next(r for r in range(n) if r != want[-1]))
    pairs = [(want[k], want[k + 1]) for k in range(0, len(want), 2)]
    local = threading.local()

    out = torch.empty(len(pairs), 2, dtype=torch.float64, device=x.device)

    def work(i: int, pair: tuple[int, int]) -> None:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = torch.empty(2, d, dtype=torch.float64, device=x.device)
        buf[0].copy_(x[pair[0]])
        buf[1].copy_(x[pair[1]])
        out[i] = buf.norm(dim=1)

    map_chunks(x, pairs, work)
    got: dict[int, torch.Tensor] = {}
    for i, pair in enumerate(pairs):
        got[pair[0]], got[pair[1]] = out[i, 0:1], out[i, 1:2]
    return got


def weighted_sum(
    x: torch.Tensor,
    coef: torch.Tensor,
    chunk_elems: int,
    *,
    version: int = 1,
    post: Callable[[slice, torch.Tensor], torch.Tensor] | None = None,
    check: FiniteCheck | None = None,
) -> torch.Tensor:
    """sum_i coef_i * x_i in float64 per chunk (one matrix-vector product), cast to x's dtype; at
    aggregation version 3, `weighted_sum_v3` (float32 products per fixed chunk; 1 and 2 are this).

    `coef` is a float64 CPU [n] vector; rows with coef 0 are skipped, the others covered for `check`:
    the result is finite only if they are (`post` must keep NaN and Inf; a finite sum that overflows the
    cast sends every row to the entry-by-entry check, which lets it through). `post(cols, chunk64)` may
    transform each float64 chunk result. Each column is reduced on its own, so the chunk size does not
    change it (observed bit-identical with MKL/OpenBLAS; tested): on the CPU it runs in cache-sized
    chunks, on several threads (`map_chunks`). `post` must therefore work per column and be thread-safe."""
    if version >= 3:
        return weighted_sum_v3(x, coef, post=post, check=check)
    d = x.shape[1]
    out = torch.zeros(d, dtype=x.dtype, device=x.device)
    keep = torch.nonzero(coef != 0).flatten()
    if keep.numel() == 0 and post is None:
        return out
    all_rows = keep.numel() == x.shape[0]
    c_dev = coef[keep].to(x.device)
    keep_dev = keep.to(x.device)

    def work(_: int, cols: slice) -> None:
        block = x[:, cols] if all_rows else x[keep_dev, cols]
        s = c_dev @ block.to(torch.float64)
        if post is not None:
            s = post(cols, s)
        out[cols] = s.to(x.dtype)

    map_chunks(x, work_chunks(x, keep.numel(), chunk_elems), work)
    if check is not None:  # NaN / Inf in a kept row survive the sum, `post` and the cast; one pass over [d]
        check.cover(keep, all_finite(out))
    return out


def median_of(v: torch.Tensor) -> float:
    """Median of a 1-D tensor, the mean of the two middle values for even length (like numpy.median)."""
    s = torch.sort(v.to(torch.float64).cpu()).values
    m = s.numel()
    return float((s[(m - 1) // 2] + s[m // 2]) * 0.5)
