"""One conversion between an adapter's flat vector and its named tensors, shared by the model and the
round's records (`consortium.vector`)."""

from __future__ import annotations

import pytest
import torch

from consortium import vector
from consortium.round import records

LAYOUT = [("a.weight", (2, 3)), ("b.weight", (4,))]


def test_records_and_the_model_use_the_same_conversion() -> None:
    from consortium import model

    assert records.flat_to_state is model.flat_to_state is vector.flat_to_state
    assert records.state_to_flat is model.state_to_flat is vector.state_to_flat


def test_round_trip_is_bit_exact_and_accepts_a_layout_read_from_json() -> None:
    vec = torch.randn(10, generator=torch.Generator().manual_seed(1))
    state = vector.flat_to_state(vec, LAYOUT)
    assert state["a.weight"].shape == (2, 3) and state["a.weight"].is_contiguous()
    from_json = [(k, list(s)) for k, s in LAYOUT]  # shapes as lists, as a report or chain record has them
    assert torch.equal(vector.state_to_flat(state, from_json), vec)


@pytest.mark.parametrize(
    ("vec", "message"),
    [
        (torch.zeros(10, dtype=torch.float64), "expected dtype torch.float32, got torch.float64"),
        (torch.zeros(2, 5), r"expected 1-D, got shape \(2, 5\)"),
        (torch.zeros(9), "expected length 10, got 9"),
        (torch.tensor([float("nan")] + [0.0] * 9), "got 1 non-finite"),
    ],
)
def test_a_bad_vector_is_refused_by_name(vec: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vector.flat_to_state(vec, LAYOUT)


def test_a_state_with_a_misshapen_or_extra_tensor_is_refused() -> None:
    state = vector.flat_to_state(torch.zeros(10), LAYOUT)
    with pytest.raises(ValueError, match=r"'b.weight' expected shape \(4,\), got \(5,\)"):
        vector.state_to_flat({**state, "b.weight": torch.zeros(5)}, LAYOUT)
    with pytest.raises(ValueError, match="unexpected tensors"):
        vector.state_to_flat({**state, "c.weight": torch.zeros(1)}, LAYOUT)
