"""Arithmetic: one-step word problems and bare sums with small integers; the answer is a single number.

Operands stay in 0-20 (products 1-10 x 1-10) so answers are 1-3 digits and a small model can learn them.
"""

from __future__ import annotations

import functools
import random

from consortium.data.domains._common import Pools, dedupe, plural, split_pool
from consortium.data.example import Example

DOMAIN = "arithmetic"
SUFFIX = "Answer with the number only."
NAMES = ("Tom", "Sara", "Ali", "Mia", "Ben", "Lena")
OBJECTS = (
    ("apple", "apples"),
    ("pencil", "pencils"),
    ("marble", "marbles"),
    ("book", "books"),
    ("coin", "coins"),
    ("sticker", "stickers"),
)
SMALL = range(21)
FACTORS = range(1, 11)


def _ex(question: str, answer: int) -> Example:
    return Example(prompt=f"{question} {SUFFIX}", response=str(answer), domain=DOMAIN)


@functools.cache
def _pools() -> Pools:
    """Every candidate example, built once per process (they are immutable)."""
    add, sub, mul = [], [], []
    for name in NAMES:
        for one, many in OBJECTS:
            for a in SMALL:
                for b in SMALL:
                    add.append(
                        _ex(
                            f"{name} has {plural(a, one, many)} and gets {b} more. "
                            f"How many {many} does {name} have now?",
                            a + b,
                        )
                    )
                    if b <= a:
                        sub.append(
                            _ex(
                                f"{name} has {plural(a, one, many)} and gives away {b}. "
                                f"How many {many} does {name} have left?",
                                a - b,
                            )
                        )
            for a in FACTORS:
                for b in FACTORS:
                    mul.append(
                        _ex(
                            f"{name} buys {plural(a, 'bag')} with {plural(b, one, many)} in each bag. "
                            f"How many {many} does {name} buy in total?",
                            a * b,
                        )
                    )
    plain_add = [_ex(f"What is {a} plus {b}?", a + b) for a in SMALL for b in SMALL]
    plain_sub = [_ex(f"What is {a} minus {b}?", a - b) for a in SMALL for b in SMALL if b <= a]
    plain_mul = [_ex(f"What is {a} times {b}?", a * b) for a in FACTORS for b in FACTORS]
    return dedupe(
        {
            "add": add,
            "sub": sub,
            "mul": mul,
            "plain_add": plain_add,
            "plain_sub": plain_sub,
            "plain_mul": plain_mul,
        }
    )


def generate(n_train: int, n_test: int, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """Sample distinct arithmetic examples, balanced over the six question kinds."""
    return split_pool(DOMAIN, _pools(), n_train, n_test, rng)
