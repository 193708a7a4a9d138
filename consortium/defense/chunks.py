"""Column chunks of an [n, d] tensor and the thread pool that runs them.

Big work ([n, d]) runs on the updates' device in column chunks of at most `chunk_elems` elements. Kernels
whose result does not depend on the chunking use cache-sized chunks on the CPU, spread over one Python
thread per core (`map_chunks`)."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")


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
            _pull_tasks(threads, tasks, work)
        finally:
            torch.set_num_threads(threads)


def _pull_tasks(threads: int, tasks: Sequence[T], work: Callable[[int, T], None]) -> None:
    """`threads` workers, each taking the next task index from one shared counter until none is left.

    One executor item per task cost ~50 us of Python (a future, its locks, a wake-up) per task: with
    cache-sized chunks that was as long as the work itself (measured: the screen's pass over 100 x 2M in
    1,527 tasks, 2.3x one pass against 1.1x pulled). Taking the next value of a shared `itertools.count`
    is atomic under the GIL. A failing task stops the others at their next pull; once all have stopped,
    its exception is raised."""
    counter = itertools.count()
    failed = threading.Event()

    def worker() -> None:
        torch.set_num_threads(1)
        for i in counter:
            if i >= len(tasks) or failed.is_set():
                return
            try:
                work(i, tasks[i])
            except BaseException:
                failed.set()
                raise

    pool = _pool(threads)
    futures = [pool.submit(worker) for _ in range(threads)]
    errors = [f.exception() for f in futures]  # waits for every worker: none is left writing after we return
    for error in errors:
        if error is not None:
            raise error


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """One executor per thread count, kept for the process: starting its threads anew for every call
    cost ~1.7 ms a thread on a loaded machine (the Gram matrix makes a call per window of chunks). Keyed
    by process id too, so a forked child, which inherits the object but not its threads, makes its own."""
    key = (os.getpid(), threads)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="consortium-chunks")
    return _POOLS[key]


_THREADS_LOCK = threading.RLock()


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch (and its BLAS) on one thread meanwhile, restored after: for a product whose bits must not
    depend on the thread count when `map_chunks` has too few tasks to run it on a thread of its own."""
    with _THREADS_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


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


def map_chunks_single_threaded(x: torch.Tensor, tasks: Sequence[T], work: Callable[[int, T], None]) -> None:
    """work(i, tasks[i]) with every task's torch ops on one thread: spread over `map_chunks`'s threads on
    a multi-core CPU, run here under `one_thread` otherwise. The bits depend on neither (versions 2 and 3
    of aggregation rest on that)."""
    if x.device.type == "cpu" and len(tasks) >= 2 and torch.get_num_threads() > 1:
        map_chunks(x, tasks, work)
    else:
        with one_thread():
            for i, task in enumerate(tasks):
                work(i, task)
