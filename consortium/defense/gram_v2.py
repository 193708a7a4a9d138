"""Aggregation version 2's Gram matrix: float32 products over fixed column chunks, summed in float64.

Version 1 (`kernels.gram`) converts each `chunk_elems` chunk to float64 and multiplies it there: the
float64 product costs about twice the float32 one and the conversion a round trip through memory, so the
distance rules ran at ~3x the float32 product `x @ x.T`. Version 2 multiplies float32 blocks, as
`x @ x.T` does, and keeps float64 only where it matters for the distances:

- the columns go in chunks of a fixed width that depends only on n (`chunk_width`), never on
  `chunk_elems`, the thread count or the device's memory;
- each chunk's [n, n] product is one float32 matrix product run on ONE thread (a BLAS product's bits
  depend on how it is split over threads; one thread's do not depend on which thread runs it);
- the chunks' products are added into a float64 [n, n] matrix in chunk order, on the updates' device.

So the result is a function of the updates, n, d and the device's single-thread float32 product:
bit-identical on the same device (and BLAS build) whatever the thread count, which version 1 is not
(its multi-threaded float64 product splits the work by thread count). Given up: version 1's accuracy.
Each chunk's float32 sums err by up to ~width * 2^-24 of their magnitude (observed ~1e-8 of the largest
squared norm on random updates), so squared distances between near-identical updates lose the digits
version 1 kept; selections that differ by less than that can differ from version 1's. A chunk whose
float32 product is not finite while its entries are (values above ~1e19) is multiplied in float64
instead, so no finite input overflows. Float64 updates are multiplied in float64 (no precision is lost).
"""

from __future__ import annotations

import torch

from consortium.defense.chunks import map_chunks_single_threaded
from consortium.defense.finite import FiniteCheck, all_finite

WIDTH_ELEMS = 1 << 21
"""Elements of one [n, width] chunk (8 MiB of float32): wide enough that a product's fixed costs are
small, narrow enough that its float32 sums stay short. Changing it changes version 2's bits: never do."""
MIN_WIDTH = 4096
WINDOW = 16
"""Chunk products held at once ([WINDOW, n, n] float32) before they are added in order; memory only."""


def chunk_width(n: int) -> int:
    """Columns per chunk: max(4096, 2^21 // n), a function of n alone (part of version 2's definition)."""
    return max(MIN_WIDTH, WIDTH_ELEMS // max(1, n))


def chunk_slices(n: int, d: int) -> list[slice]:
    """The column chunks of an [n, d] input at `chunk_width(n)` columns each."""
    width = chunk_width(n)
    return [slice(s, min(d, s + width)) for s in range(0, d, width)]


def gram_v2(x: torch.Tensor, *, on_device: bool = False, check: FiniteCheck | None = None) -> torch.Tensor:
    """X X^T (float64, symmetrised exactly as version 1's) by version 2's definition above; on the CPU
    unless `on_device`. Its diagonal covers every row for `check`."""
    n, d = x.shape
    chunks = chunk_slices(n, d)
    wide = x.dtype == torch.float64
    part_dtype = torch.float64 if wide else torch.float32
    g = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    parts = torch.empty(min(WINDOW, len(chunks)), n, n, dtype=part_dtype, device=x.device)
    exact: dict[int, torch.Tensor] = {}  # slot -> the float64 product of a chunk float32 overflowed

    def work(i: int, cols: slice) -> None:
        c = x[:, cols]
        if c.dtype != part_dtype:
            c = c.to(part_dtype)  # bfloat16 / float16: their own products would round to 8 bits
        torch.mm(c, c.T, out=parts[i])
        if not wide and not all_finite(parts[i]):  # float32 overflow of finite values, or NaN / Inf
            c64 = c.to(torch.float64)
            exact[i] = c64 @ c64.T

    for start in range(0, len(chunks), WINDOW):
        window = chunks[start : start + WINDOW]
        exact.clear()
        map_chunks_single_threaded(x, window, work)
        for i in range(len(window)):  # in chunk order: the float64 sums do not depend on the threads
            g += exact[i] if i in exact else parts[i]
    if check is not None:
        check.cover(None, all_finite(torch.diagonal(g)))
    if not on_device:
        g = g.cpu()
    return (g + g.T) * 0.5
