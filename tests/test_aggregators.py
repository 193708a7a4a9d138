"""Aggregation rules: hand-computed vectors, input checks, registry."""

import pytest
import torch

from consortium.defense.aggregators import AGGREGATORS, aggregate, fedavg, register


def test_fedavg_hand_computed() -> None:
    updates = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, -3.0], [0.0, 0.0, 0.0]])
    weights = torch.tensor([1.0, 1.0, 2.0])
    # (1*[1,2,3] + 1*[3,6,-3] + 2*[0,0,0]) / 4 = [1, 2, 0]
    assert torch.equal(fedavg(updates, weights), torch.tensor([1.0, 2.0, 0.0]))
    assert torch.equal(aggregate("fedavg", updates, torch.ones(3)), torch.tensor([4 / 3, 8 / 3, 0.0]))


def test_fedavg_order_independent_bits() -> None:
    g = torch.Generator().manual_seed(0)
    u, w = torch.randn(7, 1000, generator=g), torch.rand(7, generator=g) + 0.1
    perm = torch.randperm(7, generator=g)
    assert torch.equal(fedavg(u, w), fedavg(u[perm], w[perm]))


@pytest.mark.parametrize(
    ("updates", "weights", "msg"),
    [
        (torch.ones(3), torch.ones(3), "2-D"),
        (torch.ones(0, 3), torch.ones(0), "empty"),
        (torch.ones(2, 3), torch.ones(3), "weights must have shape"),
        (torch.ones(2, 3, dtype=torch.long), torch.ones(2), "floating point"),
        (torch.tensor([[1.0, float("nan")], [0.0, 0.0]]), torch.ones(2), "NaN"),
        (torch.ones(2, 3), torch.tensor([1.0, -1.0]), "non-negative"),
        (torch.ones(2, 3), torch.zeros(2), "not all zero"),
    ],
)
def test_bad_inputs_refused(updates: torch.Tensor, weights: torch.Tensor, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        fedavg(updates, weights)


def test_registry() -> None:
    assert "fedavg" in AGGREGATORS
    with pytest.raises(ValueError, match="unknown aggregator 'nope'"):
        aggregate("nope", torch.ones(1, 1), torch.ones(1))
    with pytest.raises(ValueError, match="registered twice"):
        register("fedavg")(fedavg)
