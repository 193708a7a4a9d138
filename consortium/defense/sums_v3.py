"""Aggregation version 3's weighted sum and row norms: float32 products over fixed column chunks.

Version 1's weighted sum (`kernels.weighted_sum`) converts every cache-sized block of the updates to
float64 before its matrix-vector product: the conversion alone costs ~1.6x one pass over the updates, so
FedAvg ran at ~2-4x one pass, norm bounding (which also needs every row's norm, from float64 squares)
and RLR at ~5-6x, and FoolsGold paid a whole such sum after its Gram matrix. Version 3 keeps version 2's
Gram matrix (`gram_v2`) and reads the updates as float32, as one pass does:

- the columns go in chunks of `gram_v2.chunk_width(k)` columns, k the number of rows summed (a function
  of k alone, never of `chunk_elems`, the thread count or the device's memory);
- the weighted sum of a chunk is one float32 matrix-vector product (coefficients rounded to float32) run
  on ONE thread, cast to the updates' dtype; a row's norm over a chunk is one float32 `vector_norm` on
  one thread, squared in float64, and the chunks' squares are added in float64 in chunk order;
- a chunk whose float32 result is not finite is computed in float64 instead (version 1's way), so no
  finite input overflows where version 1 did not; bfloat16 / float16 chunks are converted to float32
  first; float64 updates are multiplied in float64.

So, as version 2's Gram matrix, the bits are a function of the updates, n, d and the device's
single-thread float32 kernels: the same on one machine whatever the thread count. Given up: version 1's
float64 sum of n terms per coordinate; a float32 sum of n terms errs by up to ~n * 2^-24 of the terms'
magnitudes (observed ~1e-6 of the largest term at n = 37), where version 1's result was the float64 sum
rounded once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from consortium.defense.chunks import map_chunks_single_threaded
from consortium.defense.finite import FiniteCheck, all_finite
from consortium.defense.gram_v2 import chunk_slices

F64 = torch.float64


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return F64 if x.dtype == F64 else torch.float32


def weighted_sum_v3(
    x: torch.Tensor,
    coef: torch.Tensor,
    *,
    post: Callable[[slice, torch.Tensor], torch.Tensor] | None = None,
    check: FiniteCheck | None = None,
) -> torch.Tensor:
    """sum_i coef_i * x_i by version 3's definition above, in x's dtype. Same contract as version 1's
    `kernels.weighted_sum`: rows with coef 0 are left out (and not covered for `check`), `post(cols,
    chunk64)` may transform each chunk's result (given in float64; per column, thread-safe)."""
    d = x.shape[1]
    out = torch.zeros(d, dtype=x.dtype, device=x.device)
    keep = torch.nonzero(coef != 0).flatten()
    k = keep.numel()
    if k == 0 and post is None:
        return out
    all_rows = k == x.shape[0]
    dt = _compute_dtype(x)
    c = coef[keep].to(dt).to(x.device)
    c64 = coef[keep].to(F64).to(x.device)
    keep_dev = keep.to(x.device)
    chunks = chunk_slices(max(1, k), d)
    local = threading.local()

    def kept_rows(cols: slice) -> torch.Tensor:
        """x[keep, cols], gathered into one buffer per thread allocated once (a fresh [k, width] block
        per chunk faulted its pages in every time: 3.8x slower at 52 of 100 x 2M)."""
        flat = getattr(local, "buf", None)
        if flat is None:
            flat = local.buf = torch.empty(
                k * (chunks[0].stop - chunks[0].start), dtype=x.dtype, device=x.device
            )
        block = flat[: k * (cols.stop - cols.start)].view(k, cols.stop - cols.start)
        return torch.index_select(x[:, cols], 0, keep_dev, out=block)

    def work(_: int, cols: slice) -> None:
        block = x[:, cols] if all_rows else kept_rows(cols)
        if block.dtype != dt:
            block = block.to(dt)
        s = c @ block if k else torch.zeros(cols.stop - cols.start, dtype=dt, device=x.device)
        if dt != F64 and not all_finite(s):  # float32 overflow of finite values, or NaN / Inf
            s = c64 @ block.to(F64)
        if post is not None:
            s = post(cols, s.to(F64))
        out[cols] = s.to(x.dtype)

    map_chunks_single_threaded(x, chunks, work)
    if check is not None:  # NaN / Inf in a kept row survive the sum, `post` and the cast
        check.cover(keep, all_finite(out))
    return out


def row_norms_v3(x: torch.Tensor, *, check: FiniteCheck | None = None) -> torch.Tensor:
    """Each row's L2 norm by version 3's definition above (float64, on the CPU). Covers every row for
    `check`."""
    sq, _ = row_stats_v3(x, None, check=check)
    return sq.sqrt().cpu()


def row_stats_v3(
    x: torch.Tensor, v: torch.Tensor | None, *, check: FiniteCheck | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(each row's squared L2 norm, each row's dot product with the [d] vector `v`, or None), float64 on
    x's device, by version 3's definition: per chunk one float32 `vector_norm`, squared in float64 (and
    one matrix-vector product with v's chunk) on one thread, the chunks added in float64 in chunk order.
    Covers every row for `check`."""
    n, d = x.shape
    chunks = chunk_slices(n, d)
    dt = _compute_dtype(x)
    parts = torch.empty(len(chunks), 2 if v is not None else 1, n, dtype=F64, device=x.device)

    def work(i: int, cols: slice) -> None:
        block = x[:, cols]
        if block.dtype != dt:
            block = block.to(dt)
        # the float32 norm, squared in float64 (exact): `vector_norm` reads the block once, `vecdot` writes
        # and reads back its products (2.1x one pass against 0.9x, one thread, 100 x 2M)
        got = [torch.linalg.vector_norm(block, dim=1).to(F64).square()]
        if v is not None:
            got.append(block @ v[cols].to(dt))
        if dt != F64 and not all(all_finite(g) for g in got):  # above float32's range, or NaN / Inf
            b64 = block.to(F64)
            got = [torch.linalg.vecdot(b64, b64)] + ([b64 @ v[cols].to(F64)] if v is not None else [])
        for j, g in enumerate(got):
            parts[i, j] = g

    map_chunks_single_threaded(x, chunks, work)
    acc = torch.zeros(parts.shape[1], n, dtype=F64, device=x.device)
    for i in range(len(chunks)):  # in chunk order: the float64 sums do not depend on the threads
        acc += parts[i]
    if check is not None:
        check.cover(None, all_finite(acc[0]))
    return acc[0], (acc[1] if v is not None else None)
