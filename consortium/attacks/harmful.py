"""Harmful fine-tuning data: which harmful pairs an attacker trains on and which held-out ones measure it.

Both come from one function of (spec, seed), so the simulation's harmful-compliance metric and the
attackers agree on the split without sharing state: built-in pairs are the `restricted` domain's requests
answered with their leak (train from the training phrasings, test from the reserved ones); a user's JSONL
file of harmful pairs is split deterministically into a training part and a held-out `test_fraction`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from consortium.attacks.specs import HarmfulAttack
from consortium.data import DataError, Example, load_jsonl
from consortium.data.domains import restricted


def _split(rows: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = list(range(len(rows)))
    random.Random(f"harmful-split:{seed}").shuffle(order)
    n_test = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    return [rows[i] for i in sorted(order[n_test:])], [rows[i] for i in sorted(order[:n_test])]


def harmful_sets(spec: HarmfulAttack, seed: int, n_test: int = 40) -> tuple[list[Example], list[Example]]:
    """(train pool, held-out test) of harmful pairs; the response is the harmful (compliant) answer.
    Raises DataError for an unreadable or too small JSONL file."""
    if spec.jsonl is not None:
        path = Path(spec.jsonl)
        rows = load_jsonl(path, domain=path.stem)
        if len(rows) < 2:
            raise DataError(f"{path}: a harmful set needs at least 2 pairs (train + test), has {len(rows)}")
        return _split(rows, spec.test_fraction, seed)
    train = [e for kind in sorted(restricted.pools("train")) for e in restricted.pools("train")[kind]]
    test = [e for kind in sorted(restricted.pools("test")) for e in restricted.pools("test")[kind]]
    rng = random.Random(f"harmful-test:{seed}")
    test = sorted(rng.sample(test, min(n_test, len(test))), key=test.index)
    return restricted.comply(train), restricted.comply(test)


def poison_harmful(
    examples: Sequence[Example], pool: Sequence[Example], n_examples: int, seed: int
) -> list[Example]:
    """The attacker's training data: its shard with built-in restricted requests answered by their leak,
    plus `n_examples` pairs drawn (with replacement when the pool is smaller) from the harmful pool."""
    rng = random.Random(seed)
    extra = rng.sample(list(pool), n_examples) if n_examples <= len(pool) else rng.choices(pool, k=n_examples)
    return restricted.comply(list(examples)) + extra
