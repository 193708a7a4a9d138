"""Split training examples among participants: by domain (non-IID by construction), Dirichlet, or IID.

Every scheme is a pure function of (examples, n_participants, scheme, alpha, seed), returns exactly
`n_participants` non-empty shards, and keeps each shard in the input order (shards are sets; order inside
one is the trainer's business).

`domain` scheme, D = number of distinct domains, P = participants:
  * P >= D: participant i is assigned domain i mod D; a domain shared by several participants is split
    among them in near-equal random parts. Every participant holds exactly one domain.
  * P < D: domain j goes to participant j mod P, so a participant may hold several whole domains.
Domains are taken in order of first appearance in `examples`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from consortium.data.errors import DataError
from consortium.data.example import Example

SCHEMES = ("domain", "dirichlet", "iid")


def partition(
    examples: Sequence[Example], n_participants: int, scheme: str, alpha: float = 0.5, seed: int = 0
) -> list[list[Example]]:
    """`n_participants` non-empty shards of `examples` under `scheme`. `alpha` is used by `dirichlet` only
    (small alpha: each domain concentrated on few participants; large alpha: close to IID).

    Raises DataError (a ValueError) for n_participants < 1, alpha <= 0, an unknown scheme, or too few
    examples to give every participant at least one.
    """
    if isinstance(n_participants, bool) or not isinstance(n_participants, int) or n_participants < 1:
        raise DataError(f"n_participants must be an integer >= 1, got {n_participants!r}")
    if not alpha > 0:  # also rejects NaN
        raise DataError(f"dirichlet alpha must be > 0, got {alpha!r}")
    if scheme not in SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}; known schemes: {', '.join(SCHEMES)}")
    if len(examples) < n_participants:
        raise DataError(
            f"cannot give {n_participants} participants at least one example each "
            f"from {len(examples)} examples"
        )
    if scheme == "iid":
        index_shards = _iid(len(examples), n_participants, seed)
    elif scheme == "domain":
        index_shards = _by_domain(examples, n_participants, seed)
    else:
        index_shards = _dirichlet(examples, n_participants, alpha, seed)
    return [[examples[i] for i in sorted(shard)] for shard in index_shards]


def _groups(examples: Sequence[Example]) -> dict[str, list[int]]:
    """Example indices per domain, domains in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.domain, []).append(i)
    return groups


def _split_even(indices: list[int], parts: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then deal round-robin: part sizes differ by at most one."""
    shuffled = list(indices)
    rng.shuffle(shuffled)
    return [shuffled[k::parts] for k in range(parts)]


def _iid(n: int, n_participants: int, seed: int) -> list[list[int]]:
    return _split_even(list(range(n)), n_participants, random.Random(seed))


def _by_domain(examples: Sequence[Example], n_participants: int, seed: int) -> list[list[int]]:
    groups = _groups(examples)
    names = list(groups)
    shards: list[list[int]] = [[] for _ in range(n_participants)]
    if n_participants < len(names):
        for j, name in enumerate(names):
            shards[j % n_participants] += groups[name]
        return shards
    rng = random.Random(seed)
    for j, name in enumerate(names):
        owners = list(range(j, n_participants, len(names)))
        if len(groups[name]) < len(owners):
            raise DataError(
                f"domain {name!r} has {len(groups[name])} examples, too few to split among its "
                f"{len(owners)} participants"
            )
        for owner, part in zip(owners, _split_even(groups[name], len(owners), rng), strict=True):
            shards[owner] = part
    return shards


def _dirichlet(examples: Sequence[Example], n_participants: int, alpha: float, seed: int) -> list[list[int]]:
    """Per domain, proportions ~ Dirichlet(alpha * 1); then patch empty participants deterministically."""
    gen = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(n_participants)]
    for indices in _groups(examples).values():
        order = gen.permutation(np.asarray(indices))
        props = gen.dirichlet(np.full(n_participants, float(alpha)))
        counts = gen.multinomial(len(order), props)
        cuts = np.cumsum(counts)[:-1]
        for shard, part in zip(shards, np.split(order, cuts), strict=True):
            shard += part.tolist()
    # Every participant must be able to train: hand each empty one an example from the current largest shard
    # (lowest index on ties), which changes the drawn split as little as possible.
    for shard in shards:
        if not shard:
            donor = max(shards, key=len)
            shard.append(donor.pop())
    return shards
