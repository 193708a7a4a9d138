"""The simulated organisations: each one's shard (and a voter's held-out split), the seeded draw of the
attackers with their poisoned data, and the strategy each plays in a chain run."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consortium.attacks import Adversary, SybilGroup, assign, attackers_for
from consortium.config import RunConfig
from consortium.data import EncodedExample, Example
from consortium.local.data import chain_split

Encode = Callable[[list[Example]], list[EncodedExample]]


@dataclass
class Participant:
    """One simulated organisation, its private shard and, for an attacker, its poisoned copy."""

    name: str
    examples: list[Example]
    encoded: list[EncodedExample]
    adversary: Adversary | None = None
    poisoned: list[EncodedExample] | None = None
    holdout: list[EncodedExample] = field(default_factory=list)  # a voter's own held-out data
    strategy: str = "honest"

    @property
    def domains(self) -> list[str]:
        return sorted({e.domain for e in self.examples})


def make_participants(cfg: RunConfig, shards: list[list[Example]], encode: Encode) -> list[Participant]:
    """One participant per shard, attackers planted and strategies assigned (all seeded by the config)."""
    participants = []
    for i, shard in enumerate(shards):
        train, holdout = shard, []
        if cfg.protocol == "chain":  # voters judge on data they never trained on
            train, holdout = chain_split(shard, cfg, i)
        participants.append(Participant(f"org{i}", train, encode(train), holdout=encode(holdout)))
    plant_attackers(cfg, participants, encode)
    assign_strategies(cfg, participants)
    return participants


def plant_attackers(cfg: RunConfig, participants: list[Participant], encode: Encode) -> None:
    """Seeded draw of the attackers; each gets its poisoned data encoded once, sybils share a group."""
    by_name = {p.name: p for p in participants}
    groups: dict[int, SybilGroup] = {}
    for name, spec in assign(cfg.attacks, list(by_name), cfg.seed).items():
        p = by_name[name]
        p.adversary = Adversary(name, spec, p.examples, cfg.seed, groups.setdefault(id(spec), SybilGroup()))
        if p.adversary.poisoned is not None:
            p.poisoned = encode(p.adversary.poisoned)


def assign_strategies(cfg: RunConfig, participants: list[Participant]) -> None:
    """Attackers play their attack; a seeded share of the others lazy-vote, collude or no-show."""
    for p in participants:
        p.strategy = p.adversary.spec.kind if p.adversary is not None else "honest"
    if cfg.protocol != "chain":
        return
    names = [p.name for p in participants]
    taken = [p.name for p in participants if p.adversary is not None]
    chosen = strategy_names(cfg.strategies, names, taken, cfg.seed)
    for p in participants:
        p.strategy = chosen.get(p.name, p.strategy)


def strategy_names(
    specs: Sequence[Any], names: Sequence[str], taken: Sequence[str], seed: int
) -> dict[str, str]:
    """Seeded, disjoint draw of who plays each non-attack strategy, among participants not attacking."""
    rng = random.Random(f"strategies:{seed}")
    free = sorted(set(names) - set(taken))
    chosen: dict[str, str] = {}
    for spec in specs:
        k = min(attackers_for(spec.fraction, len(names)), len(free))
        for name in sorted(rng.sample(free, k)):
            chosen[name] = spec.kind
            free.remove(name)
    return chosen
