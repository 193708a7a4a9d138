"""The rule registry: `register(name, **needs)` adds a rule under its run-config name together with what
it needs from the round (`RuleNeeds`), so no module outside `consortium.defense` tests a rule by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from consortium.defense.params import AggregateResult, RuleContext

Rule = Callable[[torch.Tensor, torch.Tensor, RuleContext], AggregateResult]
AGGREGATORS: dict[str, Rule] = {}


@dataclass(frozen=True)
class RuleNeeds:
    """What a rule needs from the round around it, declared where it is registered, so that no module
    outside `consortium.defense` tests a rule by its name."""

    root: bool = False  # a trusted root update on public data (FLTrust): the driver trains and commits it
    history: bool = False  # each proposer's sum of earlier committed updates (FoolsGold)
    weighted_mean: bool = False  # the result is Σ w_k u_k with the public weights: DP's sensitivity C·max w
    flora: bool = False  # the result is Σ ω_k u_k with ω = AggregateResult.weights: FLoRA's product form


NEEDS: dict[str, RuleNeeds] = {}


def register(name: str, **needs: bool) -> Callable[[Rule], Rule]:
    """Register a rule under `name`, the value of `aggregator` in the run config, with what it needs
    (`RuleNeeds` fields: root, history, weighted_mean, flora)."""

    def deco(fn: Rule) -> Rule:
        if name in AGGREGATORS:
            raise ValueError(f"aggregator {name!r} registered twice")
        AGGREGATORS[name] = fn
        NEEDS[name] = RuleNeeds(**needs)
        return fn

    return deco


def needs(name: str) -> RuleNeeds:
    """The registered needs of rule `name` (KeyError naming the rule and the known ones)."""
    if name not in NEEDS:
        raise KeyError(f"unknown aggregator {name!r}; known: {', '.join(sorted(NEEDS))}")
    return NEEDS[name]
