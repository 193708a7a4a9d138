"""Malicious participants: who attacks (a seeded draw) and how each one crafts its update in a round.

The simulation gives an adversary two training closures over its own pre-encoded data (clean and
poisoned) and the public facts of the round; everything else an attacker does is in here.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from consortium.attacks.harmful import harmful_sets, poison_harmful
from consortium.attacks.poison import flip_labels, poison_backdoor
from consortium.attacks.specs import (
    AdaptiveBackdoorAttack,
    AttackSpec,
    BackdoorAttack,
    FreeRiderAttack,
    HarmfulAttack,
    LabelFlipAttack,
    NoiseAttack,
    ScaleAttack,
    SybilAttack,
)
from consortium.attacks.tamper import gaussian, jitter, project_to_norm, scale
from consortium.data import Example

TrainFn = Callable[[], torch.Tensor]


def attackers_for(fraction: float, n: int) -> int:
    """How many of n participants an attack hits: rounded down, at least one unless the fraction is 0."""
    return 0 if fraction == 0 else max(1, int(fraction * n + 1e-9))


def assign(attacks: Sequence[AttackSpec], names: Sequence[str], seed: int) -> dict[str, AttackSpec]:
    """Seeded, disjoint draw of the participants each attack hits, in config order. ValueError when the
    attacks ask for more participants than there are."""
    rng = random.Random(f"attackers:{seed}")
    free = sorted(names)
    chosen: dict[str, AttackSpec] = {}
    for i, spec in enumerate(attacks):
        k = attackers_for(spec.fraction, len(names))
        if k > len(free):
            raise ValueError(
                f"attacks[{i}] ({spec.kind}, fraction {spec.fraction}) needs {k} participants but only "
                f"{len(free)} of {len(names)} are not already attackers"
            )
        for name in sorted(rng.sample(free, k)):
            chosen[name] = spec
            free.remove(name)
    return dict(sorted(chosen.items()))


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big")


@dataclass(frozen=True)
class RoundView:
    """What an attacker knows about the round: all of it public."""

    round: int
    participants: int
    server_lr: float
    size: int  # length of the update vector
    last_step: torch.Tensor | None  # the previous round's global change (None in round 0)


@dataclass
class SybilGroup:
    """Shared state of one attacker's identities: the update they all copy, per round."""

    updates: dict[int, torch.Tensor] = field(default_factory=dict)


class Adversary:
    """One malicious participant following `spec`; honest before `spec.start_round`."""

    def __init__(
        self,
        name: str,
        spec: AttackSpec,
        examples: Sequence[Example],
        seed: int,
        group: SybilGroup | None = None,
    ) -> None:
        self.name, self.spec, self.seed = name, spec, seed
        self.group = group if group is not None else SybilGroup()
        if isinstance(spec, LabelFlipAttack) or (
            isinstance(spec, ScaleAttack) and spec.poison == "label_flip"
        ):
            flip = spec.flip_fraction if isinstance(spec, LabelFlipAttack) else 1.0
            self.poisoned: list[Example] | None = flip_labels(examples, flip, _seed(seed, name, "flip"))
        elif isinstance(spec, HarmfulAttack):
            pool, _ = harmful_sets(spec, seed)
            self.poisoned = poison_harmful(examples, pool, spec.n_examples, _seed(seed, name, "harmful"))
        elif spec.backdoor is not None:
            trigger, target = spec.backdoor
            self.poisoned = poison_backdoor(
                examples, trigger, target, spec.poison_fraction, _seed(seed, name, "backdoor")
            )
        else:
            self.poisoned = None  # noise and free riders never train

    def active(self, rnd: int) -> bool:
        return rnd >= self.spec.start_round

    def craft(self, view: RoundView, train_clean: TrainFn, train_poisoned: TrainFn) -> torch.Tensor:
        """The update this participant sends in the round (honest training before the attack starts)."""
        spec = self.spec
        if not self.active(view.round):
            return train_clean()
        noise_seed = _seed(self.seed, self.name, view.round, "noise")
        if isinstance(spec, (BackdoorAttack, LabelFlipAttack, HarmfulAttack)):
            return train_poisoned()
        if isinstance(spec, AdaptiveBackdoorAttack):
            benign_norm = float(torch.linalg.vector_norm(train_clean().double()))
            return project_to_norm(train_poisoned(), benign_norm)
        if isinstance(spec, ScaleAttack):
            base = train_clean() if spec.poison == "none" else train_poisoned()
            return scale(base, spec.factor or view.participants / view.server_lr)
        if isinstance(spec, NoiseAttack):
            return gaussian(view.size, spec.std, noise_seed)
        if isinstance(spec, FreeRiderAttack):
            if spec.mode == "stale" and view.last_step is not None:
                return view.last_step.clone()
            if spec.mode == "random":
                return gaussian(view.size, spec.std, noise_seed)
            return torch.zeros(view.size)
        if isinstance(spec, SybilAttack):
            if view.round not in self.group.updates:
                self.group.updates[view.round] = train_poisoned()
            return jitter(self.group.updates[view.round], spec.jitter, noise_seed)
        raise TypeError(f"unknown attack spec {type(spec).__name__}")
