"""String transforms of short common words: reverse, uppercase, length, first/last letter, letter count.

Words are 3-7 lowercase letters, so every answer is at most 7 characters.
"""

from __future__ import annotations

import functools
import random

from consortium.data.domains._common import Pools, dedupe, split_pool
from consortium.data.example import Example

DOMAIN = "strings"
SUFFIX = "Answer with the result only."
WORDS = (
    "cat",
    "dog",
    "sun",
    "map",
    "cup",
    "box",
    "red",
    "pen",
    "owl",
    "fig",
    "bird",
    "fish",
    "tree",
    "lamp",
    "rain",
    "moon",
    "star",
    "book",
    "door",
    "milk",
    "apple",
    "house",
    "water",
    "green",
    "chair",
    "bread",
    "smile",
    "river",
    "cloud",
    "stone",
    "table",
    "light",
    "paper",
    "music",
    "lemon",
    "tiger",
    "grape",
    "horse",
    "plant",
    "sugar",
    "garden",
    "yellow",
    "window",
    "banana",
    "butter",
    "pencil",
    "rabbit",
    "silver",
    "winter",
    "orange",
    "kitchen",
    "dolphin",
    "blanket",
    "rainbow",
    "teacher",
    "morning",
    "picture",
    "chicken",
    "balloon",
    "pumpkin",
)


@functools.cache
def _pools() -> Pools:
    """Every candidate example, built once per process (they are immutable)."""
    kinds = ("reverse", "upper", "length", "first", "last", "count")
    pools: dict[str, list[Example]] = {k: [] for k in kinds}

    def add(kind: str, question: str, answer: str) -> None:
        pools[kind].append(Example(prompt=f"{question} {SUFFIX}", response=answer, domain=DOMAIN))

    for w in WORDS:
        add("reverse", f"Reverse the letters of the word '{w}'.", w[::-1])
        add("upper", f"Write the word '{w}' in capital letters.", w.upper())
        add("length", f"How many letters are in the word '{w}'?", str(len(w)))
        add("first", f"What is the first letter of the word '{w}'?", w[0])
        add("last", f"What is the last letter of the word '{w}'?", w[-1])
        for c in sorted(set(w)):
            add("count", f"How many times does the letter '{c}' appear in the word '{w}'?", str(w.count(c)))
    return dedupe(pools)


def generate(n_train: int, n_test: int, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """Sample distinct string tasks, balanced over the six transform kinds."""
    return split_pool(DOMAIN, _pools(), n_train, n_test, rng)
