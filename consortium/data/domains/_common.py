"""Shared plumbing for the built-in domains: the generator signature and a leak-free train/test split."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from consortium.data.errors import DataError
from consortium.data.example import Example

# (n_train, n_test, rng) -> (train, test). A generator must be a pure function of its arguments.
DomainGenerator = Callable[[int, int, random.Random], tuple[list[Example], list[Example]]]
Pools = dict[str, tuple[Example, ...]]


def dedupe(pools: Mapping[str, Sequence[Example]]) -> Pools:
    """Drop repeated prompts (first occurrence wins, kinds in sorted order) and empty kinds."""
    seen: set[str] = set()
    out: Pools = {}
    for kind in sorted(pools):
        group = tuple(ex for ex in pools[kind] if not (ex.prompt in seen or seen.add(ex.prompt)))
        if group:
            out[kind] = group
    return out


def split_pool(
    domain: str, pools: Pools, n_train: int, n_test: int, rng: random.Random
) -> tuple[list[Example], list[Example]]:
    """Draw disjoint train and test sets from the enumerated (deduplicated) candidates, grouped by kind.

    Enumerating the whole small space and drawing without replacement gives uniqueness within a split, no
    exact-prompt leakage between splits, and an exact answer to "can this request be met?". Each draw picks a
    kind uniformly among those not used up, so a kind with a huge space (word problems) does not crowd out a
    small one (bare sums): the mix of formats stays balanced, which helps a small model learn.
    """
    kinds = sorted(pools)
    capacity = sum(len(pools[k]) for k in kinds)
    need = n_train + n_test
    if need > capacity:
        raise DataError(
            f"domain {domain!r}: asked for {n_train} train + {n_test} test = {need} distinct examples, "
            f"but it can only produce {capacity}"
        )
    left = {k: len(pools[k]) for k in kinds}
    sequence: list[str] = []
    open_kinds = list(kinds)
    for _ in range(need):
        kind = rng.choice(open_kinds)
        sequence.append(kind)
        left[kind] -= 1
        if not left[kind]:
            open_kinds.remove(kind)
    drawn = {k: iter(rng.sample(pools[k], len(pools[k]) - left[k])) for k in kinds}
    chosen = [next(drawn[k]) for k in sequence]
    return chosen[:n_train], chosen[n_train:]


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """'1 metre', '7 metres': grammatical prompts are closer to what an instruct model has seen."""
    return f"{n} {singular if n == 1 else (plural_form or singular + 's')}"
