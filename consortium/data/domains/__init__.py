"""Registry of the built-in task domains: name -> generator `(n_train, n_test, rng) -> (train, test)`.

Every domain is checked by exact match, so answers are short and in one consistent format per domain.
`register_domain` lets a plugin add a domain without editing this package.
"""

from __future__ import annotations

from consortium.data.domains import arithmetic, dates, policy, restricted, strings, units
from consortium.data.domains._common import DomainGenerator
from consortium.data.errors import DataError

DOMAINS: dict[str, DomainGenerator] = {
    "arithmetic": arithmetic.generate,
    "units": units.generate,
    "dates": dates.generate,
    "strings": strings.generate,
    "policy": policy.generate,
    "restricted": restricted.generate,
}


def register_domain(name: str, generator: DomainGenerator) -> None:
    """Add a domain; refusing to overwrite keeps a typo from silently replacing a built-in one."""
    if name in DOMAINS:
        raise ValueError(f"domain {name!r} is already registered")
    DOMAINS[name] = generator


def get_domain(name: str) -> DomainGenerator:
    """The generator for `name`, or a DataError naming it and listing the known domains."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise DataError(f"unknown domain {name!r}; known domains: {', '.join(sorted(DOMAINS))}") from None


__all__ = ["DOMAINS", "DomainGenerator", "get_domain", "register_domain"]
