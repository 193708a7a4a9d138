"""`map_chunks` shares tasks among threads that pull them from one counter: every task must run exactly
once, each on one torch thread, a failing task must surface (not be swallowed by a worker thread) and the
caller's thread count must come back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from consortium.defense.chunks import map_chunks


@pytest.fixture
def two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_every_task_runs_once_on_one_torch_thread(two_threads: None) -> None:
    x = torch.zeros(2, 2)  # a CPU tensor: the pool is used
    tasks = list(range(1000))
    seen: list[int] = []
    torch_threads: set[int] = set()
    workers: set[int] = set()
    lock = threading.Lock()

    def work(i: int, task: int) -> None:
        assert i == task
        with lock:
            seen.append(task)
            torch_threads.add(torch.get_num_threads())
            workers.add(threading.get_ident())

    map_chunks(x, tasks, work)
    assert sorted(seen) == tasks
    assert torch_threads == {1}
    assert threading.get_ident() not in workers
    assert torch.get_num_threads() == 2


def test_a_failing_task_raises_and_the_thread_count_comes_back(two_threads: None) -> None:
    x = torch.zeros(2, 2)
    ran: list[int] = []

    def work(i: int, _: int) -> None:
        if i == 7:
            raise ValueError("task 7 is bad")
        time.sleep(0.001)  # releases the GIL: the failing worker gets to set its flag
        ran.append(i)

    with pytest.raises(ValueError, match="task 7 is bad"):
        map_chunks(x, list(range(2_000)), work)
    assert len(ran) < 1_000  # the other worker stopped at a pull soon after, instead of finishing the list
    assert torch.get_num_threads() == 2


def _child_sums(queue) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(2)
    out = [0] * 50
    map_chunks(torch.zeros(2, 2), list(range(50)), lambda i, t: out.__setitem__(i, t * 2))
    queue.put(sum(out))


def test_a_forked_child_runs_its_own_pool(two_threads: None) -> None:
    """The pool is kept for the process; a child forked after it was made inherits the executor object
    but not its threads, and must not wait on them forever."""
    import multiprocessing

    map_chunks(torch.zeros(2, 2), list(range(10)), lambda i, t: None)  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_sums, args=(queue,))
    child.start()
    child.join(timeout=30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung on its parent's pool"
    assert queue.get(timeout=5) == 2 * sum(range(50))
