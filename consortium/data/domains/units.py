"""Unit conversion with exact integer answers ("How many centimetres are in 7 metres?" -> "700").

Quantities are 1-20 and every conversion factor is an integer, in both directions (the reverse direction
only asks for amounts that divide exactly), so the answer is always a whole number.
"""

from __future__ import annotations

import functools
import random

from consortium.data.domains._common import Pools, dedupe, plural, split_pool
from consortium.data.example import Example

DOMAIN = "units"
SUFFIX = "Answer with the number only."
# (big unit, its plural, small unit, its plural, how many small units make one big unit)
CONVERSIONS = (
    ("metre", "metres", "centimetre", "centimetres", 100),
    ("kilometre", "kilometres", "metre", "metres", 1000),
    ("centimetre", "centimetres", "millimetre", "millimetres", 10),
    ("kilogram", "kilograms", "gram", "grams", 1000),
    ("litre", "litres", "millilitre", "millilitres", 1000),
    ("hour", "hours", "minute", "minutes", 60),
    ("minute", "minutes", "second", "seconds", 60),
    ("day", "days", "hour", "hours", 24),
    ("week", "weeks", "day", "days", 7),
    ("year", "years", "month", "months", 12),
    ("foot", "feet", "inch", "inches", 12),
)
QUANTITIES = range(1, 21)


def _ex(question: str, answer: int) -> Example:
    return Example(prompt=f"{question} {SUFFIX}", response=str(answer), domain=DOMAIN)


@functools.cache
def _pools() -> Pools:
    """Every candidate example, built once per process (they are immutable)."""
    down, convert, up = [], [], []
    for big, bigs, small, smalls, factor in CONVERSIONS:
        for n in QUANTITIES:
            down.append(_ex(f"How many {smalls} are in {plural(n, big, bigs)}?", n * factor))
            convert.append(_ex(f"Convert {plural(n, big, bigs)} to {smalls}.", n * factor))
            up.append(_ex(f"How many {bigs} are in {plural(n * factor, small, smalls)}?", n))
    return dedupe({"down": down, "convert": convert, "up": up})


def generate(n_train: int, n_test: int, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """Sample distinct conversions, balanced over the three question kinds."""
    return split_pool(DOMAIN, _pools(), n_train, n_test, rng)
