"""Client-level DP as a wrapper around any aggregation, so the round pipeline names no DP step.

The wrapped aggregation is the screen plus the chosen rule (`consortium.round.pipeline`): the wrapper
clips the committed updates before anything looks at them and noises the result after, by what the
wrapped rule declares at its registration (`defense.needs(name).weighted_mean`, see `DpRule.finish`).
Without a `DpRule` it returns the aggregation unchanged. docs/privacy.md has the order and the guarantee.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from consortium.defense import AggregateResult
from consortium.privacy.mechanism import DpRule


@dataclass
class Outcome:
    """What an aggregation stage returns: the rule's result over all n proposers, and the public weights
    of the updates it used (those the screen or the probe dropped left out): DP's sensitivity needs them."""

    result: AggregateResult
    kept_weights: torch.Tensor


Aggregation = Callable[[torch.Tensor], Outcome]  # the committed updates [n, d] -> Outcome


def with_dp(dp: DpRule | None, aggregator: str, round_seed: int, inner: Aggregation) -> Aggregation:
    """`inner` under client-level DP: central mode clips each update to `dp.clip` first, and noise
    seeded from the round's public seed goes onto the result; the accountant's figures go to
    `result.info["dp"]`. `aggregator` is the wrapped rule's registered name (its needs decide the
    sensitivity)."""
    if dp is None:
        return inner

    def wrapped(updates: torch.Tensor) -> Outcome:
        clipped, norms = dp.clip_rows(updates)
        out = inner(clipped)
        r = out.result
        noised, info = dp.finish(r.aggregate, aggregator, out.kept_weights, round_seed)
        result = AggregateResult(noised, r.weights, r.flags, dict(r.info))
        result.info["dp"] = info | norms
        return Outcome(result, out.kept_weights)

    return wrapped
