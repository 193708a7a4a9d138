"""Fictional company policies: facts a model cannot know zero-shot and can only get right by learning them.

A fixed table of 60 facts (5 invented companies; per customer tier: refund window, warranty, discount; per
company: head office city, payday, remote days) is generated once from POLICY_TABLE_SEED, so every run and
every participant sees the same "world". Each fact can be asked with six paraphrase templates.

Split rule: train and test never share a (fact, template) pair, and every fact asked in test is asked in
train too (with other templates). So the test measures whether the fact was learnt, is learnable from the
training split, and no test prompt occurs in train.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass

from consortium.data.errors import DataError
from consortium.data.example import Example

DOMAIN = "policy"
SUFFIX = "Answer with the policy value only."
POLICY_TABLE_SEED = 20_240_611
COMPANIES = ("Zentrix", "Brellow", "Quorvan", "Maplewick", "Tovani")
TIERS = ("Bronze", "Silver", "Gold")
TIER_ATTRIBUTES = {
    "refund window": ("14 days", "21 days", "30 days", "45 days", "60 days", "90 days"),
    "warranty period": ("6 months", "1 year", "18 months", "2 years", "3 years", "5 years"),
    "loyalty discount": ("5%", "10%", "12%", "15%", "20%", "25%"),
}
COMPANY_ATTRIBUTES = {
    "head office city": ("Oslo", "Lima", "Perth", "Quito", "Porto", "Hanoi", "Nairobi", "Tallinn"),
    "payday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "number of remote days per week": ("1 day", "2 days", "3 days", "4 days"),
}
TIER_TEMPLATES = (
    "What is the {attr} for {tier} tier customers at {company}?",
    "At {company}, what is the {attr} for the {tier} tier?",
    "What {attr} does {company} give {tier} tier customers?",
    "Under {company} policy, what is the {attr} of the {tier} tier?",
    "I am a {tier} tier customer of {company}. What is my {attr}?",
    "Tell me the {attr} for the {tier} tier at {company}.",
)
COMPANY_TEMPLATES = (
    "What is the {attr} at {company}?",
    "At {company}, what is the {attr}?",
    "Under {company} policy, what is the {attr}?",
    "I work at {company}. What is our {attr}?",
    "Tell me the {attr} at {company}.",
    "What {attr} does {company} have?",
)


@dataclass(frozen=True)
class Fact:
    """One row of the policy table; `tier` is None for company-wide facts."""

    company: str
    attribute: str
    tier: str | None
    value: str

    def questions(self) -> tuple[str, ...]:
        """The fact asked with each paraphrase template (index = template id), answer suffix included."""
        templates = COMPANY_TEMPLATES if self.tier is None else TIER_TEMPLATES
        fill = {"attr": self.attribute, "tier": self.tier, "company": self.company}
        return tuple(f"{t.format(**fill)} {SUFFIX}" for t in templates)


@functools.cache
def policy_facts(seed: int = POLICY_TABLE_SEED) -> tuple[Fact, ...]:
    """The fact table, a pure function of `seed` (its own Random, never global state)."""
    rng = random.Random(seed)
    facts = [
        Fact(company, attr, tier, rng.choice(values))
        for company in COMPANIES
        for tier in TIERS
        for attr, values in TIER_ATTRIBUTES.items()
    ]
    facts += [
        Fact(company, attr, None, rng.choice(values))
        for company in COMPANIES
        for attr, values in COMPANY_ATTRIBUTES.items()
    ]
    return tuple(facts)


def generate(n_train: int, n_test: int, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """Train cycles through all facts (each appears about equally often); test asks already-trained facts.

    Test takes templates from the end of each fact's shuffled template order, train from the front, so they
    never meet; each fact keeps at least one template for train.
    """
    facts = list(policy_facts())
    n_templates = len(TIER_TEMPLATES)
    covered = min(len(facts), n_train)  # facts that the first training pass is sure to include
    test_capacity = covered * (n_templates - 1)
    train_capacity = len(facts) * n_templates - n_test
    if n_test > test_capacity or n_train > train_capacity:
        raise DataError(
            f"domain {DOMAIN!r}: asked for {n_train} train + {n_test} test examples, but with "
            f"{len(facts)} facts x {n_templates} phrasings it can produce at most {train_capacity} train "
            f"and {test_capacity} test (test only asks facts seen in training)"
        )
    rng.shuffle(facts)
    orders = [rng.sample(range(n_templates), n_templates) for _ in facts]
    test_ids: set[tuple[int, int]] = set()
    for rank, f in itertools.product(range(1, n_templates), range(covered)):
        if len(test_ids) == n_test:
            break
        test_ids.add((f, orders[f][-rank]))
    train_ids: list[tuple[int, int]] = []
    for rank, f in itertools.product(range(n_templates), range(len(facts))):
        if len(train_ids) == n_train:
            break
        if (f, orders[f][rank]) not in test_ids:
            train_ids.append((f, orders[f][rank]))

    def make(ids: list[tuple[int, int]]) -> list[Example]:
        out = [Example(facts[f].questions()[t], facts[f].value, DOMAIN) for f, t in ids]
        rng.shuffle(out)
        return out

    return make(train_ids), make(sorted(test_ids))
