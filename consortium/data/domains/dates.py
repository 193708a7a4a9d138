"""Date reasoning: weekday and month offsets ("What day of the week is 3 days after Monday?" -> "Thursday").

Answers are a single capitalised English day or month name; offsets stay small (days 1-20, months 1-12).
"""

from __future__ import annotations

import functools
import random

from consortium.data.domains._common import Pools, dedupe, plural, split_pool
from consortium.data.example import Example

DOMAIN = "dates"
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
DAY_SUFFIX = "Answer with the day name only."
MONTH_SUFFIX = "Answer with the month name only."
DAY_OFFSETS = range(1, 21)
MONTH_OFFSETS = range(1, 13)


@functools.cache
def _pools() -> Pools:
    """Every candidate example, built once per process (they are immutable)."""
    pools: dict[str, list[Example]] = {
        "day_after": [],
        "day_before": [],
        "day_in": [],
        "month_after": [],
        "month_before": [],
    }

    def add(kind: str, question: str, suffix: str, answer: str) -> None:
        pools[kind].append(Example(prompt=f"{question} {suffix}", response=answer, domain=DOMAIN))

    for i, day in enumerate(DAYS):
        for k in DAY_OFFSETS:
            add(
                "day_after",
                f"What day of the week is {plural(k, 'day')} after {day}?",
                DAY_SUFFIX,
                DAYS[(i + k) % 7],
            )
            add(
                "day_before",
                f"What day of the week is {plural(k, 'day')} before {day}?",
                DAY_SUFFIX,
                DAYS[(i - k) % 7],
            )
            add(
                "day_in",
                f"If today is {day}, what day of the week will it be in {plural(k, 'day')}?",
                DAY_SUFFIX,
                DAYS[(i + k) % 7],
            )
    for i, month in enumerate(MONTHS):
        for k in MONTH_OFFSETS:
            add(
                "month_after",
                f"Which month is {plural(k, 'month')} after {month}?",
                MONTH_SUFFIX,
                MONTHS[(i + k) % 12],
            )
            add(
                "month_before",
                f"Which month is {plural(k, 'month')} before {month}?",
                MONTH_SUFFIX,
                MONTHS[(i - k) % 12],
            )
    return dedupe(pools)


def generate(n_train: int, n_test: int, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """Sample distinct date questions, balanced over the five question kinds."""
    return split_pool(DOMAIN, _pools(), n_train, n_test, rng)
