"""DP as a wrapper around any aggregation (`consortium.privacy.wrap.with_dp`): it clips before the
wrapped stage sees the updates, noises after, asks the wrapped rule's registered needs, and without a
DpRule it is the stage itself."""

from __future__ import annotations

import torch

from consortium.defense import AggregateResult
from consortium.privacy import DpRule
from consortium.privacy.mechanism import central_noise, noise_seed
from consortium.privacy.wrap import Outcome, with_dp


def _updates() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 50, generator=g) * torch.tensor([[0.1], [2.0], [5.0], [9.0]])


class Recorder:
    """A stage that records what it was given and returns the plain mean, all four kept."""

    def __init__(self) -> None:
        self.seen: torch.Tensor | None = None

    def __call__(self, updates: torch.Tensor) -> Outcome:
        self.seen = updates
        n = updates.shape[0]
        result = AggregateResult(updates.mean(0), torch.full((n,), 1 / n), torch.zeros(n, dtype=torch.bool))
        return Outcome(result, torch.ones(n, dtype=torch.float64))


def test_without_dp_the_stage_is_returned_unchanged() -> None:
    stage = Recorder()
    assert with_dp(None, "fedavg", 1, stage) is stage


def test_central_dp_clips_before_the_stage_and_noises_after() -> None:
    stage, u = Recorder(), _updates()
    out = with_dp(DpRule("central", 1.0, 0.5, planned=4), "fedavg", 42, stage)(u)
    assert stage.seen is not None
    assert float(stage.seen.norm(dim=1).max()) <= 1.0 + 1e-5  # the stage saw clipped updates only
    noise = central_noise(50, 0.5 * 1.0 * 0.25, noise_seed(42))  # z · C · max w, w uniform over 4
    assert torch.equal(out.result.aggregate, stage.seen.mean(0) + noise)
    assert out.result.info["dp"]["clipped_fraction"] == 0.75
    assert torch.equal(out.kept_weights, torch.ones(4, dtype=torch.float64))


def test_the_wrapped_rules_needs_decide_the_sensitivity() -> None:
    """A weighted mean is sensitive C·max w; any other rule is forced into the C-ball (diameter 2C)."""
    dp = DpRule("central", 1.0, 0.0, planned=4)
    mean = with_dp(dp, "fedavg", 1, Recorder())(_updates())
    median = with_dp(dp, "median", 1, Recorder())(_updates())
    assert mean.result.info["dp"]["sensitivity"] == 0.25
    assert median.result.info["dp"]["sensitivity"] == 2.0


def test_distributed_dp_leaves_the_committed_updates_as_they_are() -> None:
    """Each owner clipped and noised its own update: the wrapper must not clip them again."""
    stage, u = Recorder(), _updates()
    out = with_dp(DpRule("distributed", 1.0, 1.0, planned=4), "fedavg", 3, stage)(u)
    assert stage.seen is u
    assert torch.equal(out.result.aggregate, u.mean(0))
