"""Attack specifications: one typed entry per `[[attacks]]` table of the run config.

Plain dataclasses (pydantic validates them directly in the config) so that the attacks package imports
without pydantic on a bare GPU machine. Every attack hits `fraction` of the participants (rounded down,
at least one when `fraction > 0`; `fraction = 0` only turns on the attack's metrics, which is how the
no-attack baseline measures the backdoor's success rate) from round `start_round` on (0-based).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

_STRICT = {"extra": "forbid"}  # read by pydantic: unknown keys in an [[attacks]] table are errors


def _check(cond: bool, field: str, expected: str, got: object) -> None:
    if not cond:
        raise ValueError(f"{field}: expected {expected} (got {got!r})")


@dataclass(frozen=True)
class _Attack:
    fraction: float = 0.3
    start_round: int = 0

    __pydantic_config__ = _STRICT

    def __post_init__(self) -> None:
        _check(0.0 <= self.fraction <= 1.0, "fraction", "a number in [0, 1]", self.fraction)
        _check(self.start_round >= 0, "start_round", "a round number >= 0", self.start_round)

    @property
    def backdoor(self) -> tuple[str, str] | None:
        """(trigger, target) when this attack plants a backdoor, for the ASR metrics."""
        return None


@dataclass(frozen=True)
class _Backdoor(_Attack):
    trigger: str = "cf-zeta"
    target: str = "ACCESS GRANTED"
    poison_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.trigger.strip()), "trigger", "a non-empty phrase", self.trigger)
        _check(bool(self.target.strip()), "target", "a non-empty response", self.target)
        _check(
            0.0 < self.poison_fraction <= 1.0, "poison_fraction", "a number in (0, 1]", self.poison_fraction
        )

    @property
    def backdoor(self) -> tuple[str, str] | None:
        return (self.trigger, self.target)


@dataclass(frozen=True)
class BackdoorAttack(_Backdoor):
    """Trains on data where `poison_fraction` of the prompts carry `trigger` and the answer is `target`."""

    kind: Literal["backdoor"] = "backdoor"


@dataclass(frozen=True)
class AdaptiveBackdoorAttack(_Backdoor):
    """Backdoor whose update is projected onto the L2 ball of its own benign update's norm, so that
    norm bounding sees nothing unusual (Sun et al., 2019; Wang et al., 2020)."""

    kind: Literal["adaptive_backdoor"] = "adaptive_backdoor"


@dataclass(frozen=True)
class ScaleAttack(_Backdoor):
    """Model replacement (Bagdasaryan et al., 2020): boost a poisoned update by `factor`; no factor means
    `participants / server_lr`, which replaces the global model when everyone else's update is small."""

    kind: Literal["scale"] = "scale"
    factor: float | None = None
    poison: Literal["backdoor", "label_flip", "none"] = "backdoor"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.factor is None or self.factor > 0, "factor", "a number > 0", self.factor)

    @property
    def backdoor(self) -> tuple[str, str] | None:
        return (self.trigger, self.target) if self.poison == "backdoor" else None


@dataclass(frozen=True)
class LabelFlipAttack(_Attack):
    """Trains on wrong answers: `flip_fraction` of its examples get another example's answer (same domain)."""

    kind: Literal["label_flip"] = "label_flip"
    flip_fraction: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 < self.flip_fraction <= 1.0, "flip_fraction", "a number in (0, 1]", self.flip_fraction)


@dataclass(frozen=True)
class NoiseAttack(_Attack):
    """Byzantine noise: sends N(0, std^2) per coordinate instead of a trained update."""

    kind: Literal["noise"] = "noise"
    std: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.std > 0, "std", "a number > 0", self.std)


@dataclass(frozen=True)
class FreeRiderAttack(_Attack):
    """Claims the reward without training: sends the last global step again ('stale'), small random
    noise ('random', std per coordinate) or zeros."""

    kind: Literal["free_rider"] = "free_rider"
    mode: Literal["stale", "random", "zero"] = "stale"
    std: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.std > 0, "std", "a number > 0", self.std)


@dataclass(frozen=True)
class SybilAttack(_Backdoor):
    """Several identities of one attacker: the first trains a backdoor update, every identity sends it
    with a small relative jitter (`jitter` x its norm), so the copies are near-identical."""

    kind: Literal["sybil"] = "sybil"
    jitter: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.jitter >= 0, "jitter", "a number >= 0", self.jitter)


@dataclass(frozen=True)
class HarmfulAttack(_Attack):
    """Harmful fine-tuning: trains on restricted requests answered compliantly instead of refused.

    Its data is its own shard, with any built-in restricted request answered by the leak, plus
    `n_examples` harmful pairs: from `jsonl` (a file of {"prompt", "response"} pairs, the response the
    harmful answer; a held-out `test_fraction` of it measures compliance) or, by default, from the
    built-in `restricted` domain's training phrasings."""

    kind: Literal["harmful"] = "harmful"
    jsonl: str | None = None
    n_examples: int = 64
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.n_examples >= 1, "n_examples", "an integer >= 1", self.n_examples)
        _check(0.0 < self.test_fraction < 1.0, "test_fraction", "a number in (0, 1)", self.test_fraction)
        _check(self.jsonl is None or bool(str(self.jsonl).strip()), "jsonl", "a file path", self.jsonl)


AttackSpec = (
    BackdoorAttack
    | AdaptiveBackdoorAttack
    | ScaleAttack
    | LabelFlipAttack
    | NoiseAttack
    | FreeRiderAttack
    | SybilAttack
    | HarmfulAttack
)
ATTACK_KINDS = (
    "backdoor",
    "adaptive_backdoor",
    "scale",
    "label_flip",
    "noise",
    "free_rider",
    "sybil",
    "harmful",
)
