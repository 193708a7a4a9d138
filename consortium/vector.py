"""An adapter as the participants exchange it: one flat float32 vector, or its named tensors in layout
order. Torch only, so that the round's records (`consortium.round.records`) and the model
(`consortium.model.lora`) share one conversion, and reading records needs no transformers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# names and shapes of the communicated tensors, in the order the flat vector holds them
Layout = list[tuple[str, tuple[int, ...]]]
# what the conversions accept: a Layout, or one read back from JSON (shapes as lists)
Shapes = Sequence[tuple[str, Sequence[int]]]


def layout_size(lay: Shapes) -> int:
    """Number of float32 values a vector with this layout holds."""
    return sum(math.prod(shape) for _, shape in lay)


def check_vector(vec: Tensor, expected: int) -> None:
    """Reject anything that is not a finite 1-D float32 vector of the expected length, naming the problem."""
    if not isinstance(vec, Tensor):
        raise ValueError(f"adapter vector: expected a torch.Tensor, got {type(vec).__name__}")
    if vec.dtype != torch.float32:
        raise ValueError(f"adapter vector: expected dtype torch.float32, got {vec.dtype}")
    if vec.dim() != 1:
        raise ValueError(f"adapter vector: expected 1-D, got shape {tuple(vec.shape)}")
    if vec.numel() != expected:
        raise ValueError(f"adapter vector: expected length {expected}, got {vec.numel()}")
    if not bool(torch.isfinite(vec).all()):
        bad = int((~torch.isfinite(vec)).sum())
        raise ValueError(f"adapter vector: expected finite values, got {bad} non-finite (NaN/inf)")


def state_to_flat(state: dict[str, Tensor], lay: Shapes) -> Tensor:
    """Concatenate ``state`` in layout order into one float32 CPU vector (checks names and shapes)."""
    parts = []
    for key, shape in lay:
        if key not in state:
            raise ValueError(f"adapter state: missing tensor {key!r}")
        t = state[key]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"adapter state: {key!r} expected shape {tuple(shape)}, got {tuple(t.shape)}")
        parts.append(t.detach().to(device="cpu", dtype=torch.float32).reshape(-1))
    extra = set(state) - {k for k, _ in lay}
    if extra:
        raise ValueError(f"adapter state: unexpected tensors {sorted(extra)[:3]}")
    return torch.cat(parts).contiguous() if parts else torch.zeros(0, dtype=torch.float32)


def flat_to_state(vec: Tensor, lay: Shapes) -> dict[str, Tensor]:
    """Split a flat vector into named tensors (fresh contiguous copies, safe to save with safetensors)."""
    check_vector(vec, layout_size(lay))
    out: dict[str, Tensor] = {}
    offset = 0
    for key, shape in lay:
        n = math.prod(shape)
        out[key] = vec[offset : offset + n].reshape(shape).clone().contiguous()
        offset += n
    return out
