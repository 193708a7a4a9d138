"""Build the built-in multi-domain corpus: deterministic per seed, with disjoint train and test prompts."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from consortium.data.domains import get_domain
from consortium.data.errors import DataError
from consortium.data.example import Example


@dataclass(frozen=True)
class Corpus:
    """Train and test examples, grouped by domain in the order the domains were requested."""

    train: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)

    @property
    def domains(self) -> list[str]:
        """The domains present, in order of first appearance."""
        return list(dict.fromkeys(e.domain for e in self.train + self.test))


def domain_rng(seed: int, domain: str) -> random.Random:
    """A private Random per (seed, domain). crc32 is stable across processes (unlike `hash`), and a separate
    stream per domain means adding or removing one domain leaves the others' examples unchanged."""
    return random.Random(seed + zlib.crc32(domain.encode()))


def build_corpus(domains: Sequence[str], n_train: int, n_test: int, seed: int) -> Corpus:
    """`n_train` train and `n_test` test examples for each domain; the same arguments give the same corpus.

    Raises DataError (a ValueError) for an unknown or repeated domain, negative sizes, or a request larger
    than a domain can produce without duplicates.
    """
    if isinstance(domains, str):
        raise DataError(f"domains must be a sequence of names, not the string {domains!r}")
    if n_train < 0 or n_test < 0:
        raise DataError(f"n_train and n_test must be >= 0 (got {n_train}, {n_test})")
    repeated = sorted({d for d in domains if list(domains).count(d) > 1})
    if repeated:
        raise DataError(f"domain(s) listed more than once: {', '.join(repeated)}")
    generators = [(name, get_domain(name)) for name in domains]  # fail on a bad name before any work
    train: list[Example] = []
    test: list[Example] = []
    for name, generate in generators:
        tr, te = generate(n_train, n_test, domain_rng(seed, name))
        train += tr
        test += te
    return Corpus(train=train, test=test)
