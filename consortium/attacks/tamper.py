"""Update tampering: what a malicious participant does to the update it sends. Pure torch, seeded."""

from __future__ import annotations

import torch


def scale(delta: torch.Tensor, factor: float) -> torch.Tensor:
    """Boost (or shrink) an update: the core of model replacement."""
    return delta * factor


def project_to_norm(delta: torch.Tensor, bound: float) -> torch.Tensor:
    """Project onto the L2 ball of radius `bound` (unchanged when already inside), so norm-based
    screening sees an update no larger than a benign one."""
    norm = float(torch.linalg.vector_norm(delta.double()))
    return delta if norm <= bound or norm == 0.0 else delta * (bound / norm)


def gaussian(size: int, std: float, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, std^2) per coordinate from a CPU generator, so the same seed gives the same vector anywhere."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(size, generator=g, dtype=torch.float64) * std).to(dtype)


def jitter(delta: torch.Tensor, relative: float, seed: int) -> torch.Tensor:
    """A near-identical copy: add noise whose total norm is about `relative` x the update's norm."""
    if relative == 0.0:
        return delta.clone()
    norm = float(torch.linalg.vector_norm(delta.double()))
    std = relative * norm / max(delta.numel(), 1) ** 0.5
    return delta + gaussian(delta.numel(), std, seed, delta.dtype).to(delta.device)
