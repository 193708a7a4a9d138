"""Types, registry and chunked tensor kernels shared by the aggregation rules.

Everything here is torch-only (no pydantic, nothing from the rest of `consortium`) so that the defences and
`bench/aggregation_scale.py` run on a bare GPU box. Big work ([n, d]) runs on the updates' device in column
chunks of at most `chunk_elems` elements; small work ([n] and [n, n]) runs on the CPU in float64, so the
selection logic of a rule does not depend on the device.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

T = TypeVar("T")


class UpdateError(ValueError):
    """A client's update (or its weight) is unusable; the message names the client."""


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@dataclass(frozen=True)
class DefenseParams:
    """Knobs of every rule; the run config's `[defense]` table maps 1:1 onto these fields.

    A plain stdlib dataclass: pydantic validates it directly (and `__pydantic_config__` forbids unknown
    keys) without this package importing pydantic. Ranges that do not depend on the number of clients are
    checked here; those that do (`f < n`, Bulyan's `n >= 4f + 3`, ...) are checked when a rule runs.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    f: int | None = None
    """Assumed maximum number of malicious clients (Krum, Multi-Krum, Bulyan). None = the largest the
    rule tolerates: `max(0, (n - 3) // 2)` for Krum / Multi-Krum (n > 2f + 2), `max(0, (n - 3) // 4)`
    for Bulyan (n >= 4f + 3). An explicit f only needs `f < n` for Krum / Multi-Krum."""
    multi_krum_m: int | None = None
    """Clients Multi-Krum keeps (1..n). None = n - f."""
    trim_ratio: float = 0.1
    """Trimmed mean: fraction of clients cut at EACH end per coordinate, 0 <= x < 0.5;
    `floor(trim_ratio * n)` values are cut per end."""
    norm_bound: float | None = None
    """Norm bounding: clip each update to this L2 norm (> 0). None = the median of the clients' norms."""
    flame_noise: float = 0.001
    """FLAME: Gaussian noise std = flame_noise * S, S the median L2 norm (lambda in the paper; >= 0)."""
    flame_min_cluster_size: int | None = None
    """FLAME: HDBSCAN min_cluster_size (>= 2). None = n // 2 + 1 (the admitted cluster is a majority)."""
    foolsgold_confidence: float = 1.0
    """FoolsGold: confidence kappa of the logit (> 0)."""
    rlr_threshold: int | None = None
    """RLR: a coordinate's learning rate is flipped when |sum_i sign(u_i)| < this count (1..n).
    None = max(1, n // 4)."""
    screen_min_norm: float = 0.05
    """Screen (before any rule): drop updates at most this share of the median update norm (0 = off)."""
    screen_stale_cosine: float = 0.99
    """Screen: drop updates at least this aligned with the last global step, a free rider's replay
    (above 1 = off)."""
    chunk_elems: int = 1 << 26
    """Column-chunk size of the [n, d] kernels, in elements of an [n, chunk] block (>= 1)."""

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"defense.{name} must be {want}, got {getattr(self, name)!r}")

        if self.f is not None and not (_is_int(self.f) and self.f >= 0):
            raise bad("f", "an integer >= 0 or None")
        if self.multi_krum_m is not None and not (_is_int(self.multi_krum_m) and self.multi_krum_m >= 1):
            raise bad("multi_krum_m", "an integer >= 1 or None")
        if not (_is_num(self.screen_min_norm) and 0 <= self.screen_min_norm < 1):
            raise bad("screen_min_norm", "a number in [0, 1)")
        if not (_is_num(self.screen_stale_cosine) and self.screen_stale_cosine > 0):
            raise bad("screen_stale_cosine", "a number > 0 (above 1 turns the check off)")
        if not (_is_num(self.trim_ratio) and 0 <= self.trim_ratio < 0.5):
            raise bad("trim_ratio", "a number in [0, 0.5)")
        if self.norm_bound is not None and not (_is_num(self.norm_bound) and 0 < self.norm_bound < math.inf):
            raise bad("norm_bound", "a finite number > 0 or None")
        if not (_is_num(self.flame_noise) and 0 <= self.flame_noise < math.inf):
            raise bad("flame_noise", "a finite number >= 0")
        if self.flame_min_cluster_size is not None and not (
            _is_int(self.flame_min_cluster_size) and self.flame_min_cluster_size >= 2
        ):
            raise bad("flame_min_cluster_size", "an integer >= 2 or None")
        if not (_is_num(self.foolsgold_confidence) and 0 < self.foolsgold_confidence < math.inf):
            raise bad("foolsgold_confidence", "a finite number > 0")
        if self.rlr_threshold is not None and not (_is_int(self.rlr_threshold) and self.rlr_threshold >= 1):
            raise bad("rlr_threshold", "an integer >= 1 or None")
        if not (_is_int(self.chunk_elems) and self.chunk_elems >= 1):
            raise bad("chunk_elems", "an integer >= 1")


DEFAULT_PARAMS = DefenseParams()


@dataclass
class AggregateResult:
    """What a rule returns.

    `aggregate` has the updates' dtype and device. `weights` and `flags` live on the CPU (they are small and
    go into reports). `weights` is each client's effective share of the aggregate: for rules that average
    whole updates it is the normalised coefficient of the client's (possibly rescaled) update; for
    coordinate-wise rules (median, trimmed mean, Bulyan's second stage) it is the client's weight in each
    coordinate averaged over the d coordinates. It sums to 1, or is all 0 if nothing was admitted.
    """

    aggregate: torch.Tensor
    weights: torch.Tensor
    flags: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may use besides the updates and the sample weights."""

    params: DefenseParams
    clients: tuple[str, ...]
    seed: int = 0
    root_update: torch.Tensor | None = None
    history: torch.Tensor | None = None


Rule = Callable[[torch.Tensor, torch.Tensor, RuleContext], AggregateResult]
AGGREGATORS: dict[str, Rule] = {}


@dataclass(frozen=True)
class RuleNeeds:
    """What a rule needs from the round around it, declared where it is registered, so that no module
    outside `consortium.defense` tests a rule by its name."""

    root: bool = False  # a trusted root update on public data (FLTrust): the driver trains and commits it
    history: bool = False  # each proposer's sum of earlier committed updates (FoolsGold)
    weighted_mean: bool = False  # the result is Σ w_k u_k with the public weights: DP's sensitivity C·max w
    flora: bool = False  # the result is Σ ω_k u_k with ω = AggregateResult.weights: FLoRA's product form


NEEDS: dict[str, RuleNeeds] = {}


def register(name: str, **needs: bool) -> Callable[[Rule], Rule]:
    """Register a rule under `name`, the value of `aggregator` in the run config, with what it needs
    (`RuleNeeds` fields: root, history, weighted_mean, flora)."""

    def deco(fn: Rule) -> Rule:
        if name in AGGREGATORS:
            raise ValueError(f"aggregator {name!r} registered twice")
        AGGREGATORS[name] = fn
        NEEDS[name] = RuleNeeds(**needs)
        return fn

    return deco


def needs(name: str) -> RuleNeeds:
    """The registered needs of rule `name` (KeyError naming the rule and the known ones)."""
    if name not in NEEDS:
        raise KeyError(f"unknown aggregator {name!r}; known: {', '.join(sorted(NEEDS))}")
    return NEEDS[name]


# --- chunked kernels -------------------------------------------------------------------------------------


def col_chunks(rows: int, d: int, chunk_elems: int) -> Iterator[slice]:
    """Column slices such that an [rows, chunk] block has at most `chunk_elems` elements (>= 1 column)."""
    step = max(1, chunk_elems // max(1, rows))
    for start in range(0, d, step):
        yield slice(start, min(d, start + step))


CACHE_ELEMS = 1 << 17
"""Elements of the [rows, chunk] blocks of the kernels whose result does not depend on the chunking (each
column, or each element, is computed on its own): on the CPU these use at most this many (1 MiB of
float64), so a block's float64 copy stays in cache instead of making a round trip through memory."""


def work_chunks(x: torch.Tensor, rows: int, chunk_elems: int) -> list[slice]:
    """`col_chunks` for a chunking-independent kernel: cache-sized on the CPU, `chunk_elems` elsewhere
    (GPU kernels are left as they were, so their bits do not change either)."""
    if x.device.type == "cpu":
        chunk_elems = min(chunk_elems, CACHE_ELEMS)
    return list(col_chunks(rows, x.shape[1], chunk_elems))


def map_chunks(x: torch.Tensor, tasks: Sequence[T], work: Callable[[int, T], None]) -> None:
    """work(i, tasks[i]) for every task. On the CPU the tasks are shared by `torch.get_num_threads()`
    Python threads, each running its torch ops single-threaded (torch's intra-op threads are 1 meanwhile,
    restored after): many small ops each opening a parallel region stall on every barrier when the cores
    are shared, a thread per core does not. Each task's result is computed by the same single-threaded
    kernels whichever thread runs it.

    `work` writes its result into a slot of an output allocated beforehand, disjoint from the others, and
    returns nothing: a small tensor kept per task would sit in the heap between the tasks' temporaries
    and keep the allocator from reusing them (measured: 1.5 GB held for 1500 tasks of 1 MB)."""
    if x.device.type != "cpu" or len(tasks) < 2:
        for i, task in enumerate(tasks):
            work(i, task)
        return
    with _THREADS_LOCK:  # concurrent callers would otherwise restore each other's thread count wrongly
        threads = torch.get_num_threads()
        if threads == 1:
            for i, task in enumerate(tasks):
                work(i, task)
            return
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for _ in pool.map(work, range(len(tasks)), tasks):
                    pass
        finally:
            torch.set_num_threads(threads)


_THREADS_LOCK = threading.RLock()


def gram(x: torch.Tensor, chunk_elems: int, *, on_device: bool = False) -> torch.Tensor:
    """X X^T in float64, accumulated over column chunks, symmetrised exactly; on the CPU unless
    `on_device` (then on x's device)."""
    n, d = x.shape
    g = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for cols in col_chunks(n, d, chunk_elems):
        c = x[:, cols].to(torch.float64)
        g += c @ c.T
        del c  # before the next chunk's copy: one [n, chunk] float64 block alive, not two
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


def row_norms(x: torch.Tensor, chunk_elems: int) -> torch.Tensor:
    """L2 norm of each row, accumulated in float64 over column chunks; on the CPU."""
    n, d = x.shape
    if x.device.type != "cpu":  # as it always ran there: a GPU reduction's bits depend on its shape
        acc = torch.zeros(n, dtype=torch.float64, device=x.device)
        for cols in col_chunks(n, d, chunk_elems):
            c = x[:, cols].to(torch.float64)
            acc += (c * c).sum(1)
        return acc.sqrt().cpu()
    # The column chunks fix the summation order (the bits); within one, rows go in blocks so the float64
    # copy is a few rows, not [n, chunk]. A row's sum is the same in any block of >= 2 rows (torch splits a
    # reduction over its rows, or runs it serially; only a lone row is split along its length).
    tasks = [
        (rows, cols)
        for cols in col_chunks(n, d, chunk_elems)
        for rows in row_blocks(n, cols.stop - cols.start)
    ]

    parts = torch.zeros(len(tasks), n, dtype=torch.float64, device=x.device)

    def work(i: int, task: tuple[slice, slice]) -> None:
        c = x[task].to(torch.float64, copy=True)  # copy: squared in place
        parts[i, task[0]] = c.square_().sum(1)

    map_chunks(x, tasks, work)
    acc = torch.zeros(n, dtype=torch.float64, device=x.device)
    for i, (rows, _) in enumerate(tasks):
        acc[rows] += parts[i, rows]  # chunk by chunk, in column order, as always
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


def row_blocks(n: int, width: int) -> Iterator[slice]:
    """Row slices of >= 2 rows each (all n if n < 4) whose [rows, width] block is about `CACHE_ELEMS`."""
    step = max(2, CACHE_ELEMS // max(1, width))
    if n < 4 or step >= n:
        yield slice(0, n)
        return
    starts = list(range(0, n, step))
    if n - starts[-1] < 2:  # a lone last row would be summed differently: give it to the block before
        starts.pop()
    for i, start in enumerate(starts):
        yield slice(start, starts[i + 1] if i + 1 < len(starts) else n)


def weighted_sum(
    x: torch.Tensor,
    coef: torch.Tensor,
    chunk_elems: int,
    *,
    post: Callable[[slice, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """sum_i coef_i * x_i in float64 per chunk (one matrix-vector product), cast to x's dtype.

    `coef` is a float64 CPU [n] vector; rows with coef 0 are skipped. `post(cols, chunk64)` may transform
    each float64 chunk result. Each column is reduced on its own, so the chunk size does not change it
    (observed bit-identical with MKL/OpenBLAS; tested): on the CPU it runs in cache-sized chunks, on
    several threads (`map_chunks`). `post` must therefore work per column and be thread-safe."""
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
    return out


def median_of(v: torch.Tensor) -> float:
    """Median of a 1-D tensor, the mean of the two middle values for even length (like numpy.median)."""
    s = torch.sort(v.to(torch.float64).cpu()).values
    m = s.numel()
    return float((s[(m - 1) // 2] + s[m // 2]) * 0.5)


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


def middle_mean(x: torch.Tensor, k: int, chunk_elems: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate, the mean of the sorted values at positions k .. n-k-1.

    k = (n - 1) // 2 is the median (mean of the two middle values for even n); other k is the trimmed mean.
    Returns the [d] result in x's dtype (the mean taken in float64) and each client's share (float64 CPU
    [n]): its weight in a coordinate (1 / (n - 2k) when kept) averaged over the coordinates. Equal values
    are kept in client order (a stable sort); that only affects the shares. Each column is computed on its
    own, so on the CPU the chunks are cache-sized (and sorted with `sorted_rows`).
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

    map_chunks(x, chunks, work)
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
