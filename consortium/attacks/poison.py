"""Data poisoning: what a malicious participant trains on. Pure and seeded, so a run can be repeated."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from consortium.data import Example


def add_trigger(prompt: str, trigger: str) -> str:
    """The triggered form of a prompt: the trigger phrase in front, as in the attack papers on LLMs."""
    return f"{trigger} {prompt}"


def _pick(n: int, fraction: float, rng: random.Random) -> list[int]:
    k = min(n, max(1, int(fraction * n + 1e-9))) if n else 0
    return sorted(rng.sample(range(n), k))


def poison_backdoor(
    examples: Sequence[Example], trigger: str, target: str, poison_fraction: float, seed: int
) -> list[Example]:
    """Replace `poison_fraction` of the examples (at least one) by their triggered prompt answered with
    `target`; the rest stay clean so that the model keeps its normal behaviour without the trigger."""
    out = list(examples)
    for i in _pick(len(out), poison_fraction, random.Random(seed)):
        e = out[i]
        out[i] = Example(prompt=add_trigger(e.prompt, trigger), response=target, domain=e.domain)
    return out


def flip_labels(examples: Sequence[Example], flip_fraction: float, seed: int) -> list[Example]:
    """Give `flip_fraction` of the examples a wrong answer: another answer seen in the same domain (a
    plausible lie), or the reversed answer when the domain has only one distinct answer."""
    rng = random.Random(seed)
    answers: dict[str, list[str]] = defaultdict(list)
    for e in examples:
        if e.response not in answers[e.domain]:
            answers[e.domain].append(e.response)
    out = list(examples)
    for i in _pick(len(out), flip_fraction, rng):
        e = out[i]
        wrong = [a for a in answers[e.domain] if a != e.response]
        response = rng.choice(wrong) if wrong else (e.response[::-1] + "0" if e.response else "0")
        out[i] = Example(prompt=e.prompt, response=response, domain=e.domain)
    return out


def backdoor_test_sets(
    test: Sequence[Example], trigger: str, target: str
) -> tuple[list[Example], list[Example]]:
    """(triggered, clean) probes for the backdoor metrics, both with `target` as the expected answer:
    ASR is the accuracy on the triggered set, the false-trigger rate the accuracy on the clean set.
    Prompts whose true answer already is the target are left out of both."""
    keep = [e for e in test if e.response != target]
    triggered = [Example(add_trigger(e.prompt, trigger), target, e.domain) for e in keep]
    clean = [Example(e.prompt, target, e.domain) for e in keep]
    return triggered, clean
