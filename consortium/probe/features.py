"""Probe features of a LoRA update: which tensors, flattened, L2-normalised, optionally sketched, plus norms.

Why this choice (see docs/probes.md):
- the direction of ΔLoRA is what tells *what* a client trained towards (a refusal turned into a leak, a
  trigger mapped to a target), independent of how long or with which learning rate it trained, so the
  selected tensors are concatenated and L2-normalised as one unit vector;
- the size is what tells boosted (scaling), random (noise) or empty (free-rider) updates, which a unit
  vector hides, so `norm_stats` appends log10 of each selected tensor's raw L2 norm;
- B carries the learnt change (A is a fixed random projection under FFA, and moves little under plain
  LoRA), so every communicated tensor is used by default and `modules` narrows it to chosen layers;
- for a large model (SmolLM2, all linear layers: ~1.2M values) `sketch_dim` applies a seeded count
  sketch (a sparse Johnson-Lindenstrauss map) to the unit vector, which keeps inner products, hence
  what a linear probe sees, up to small distortion, at a fixed size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

Layout = list[tuple[str, tuple[int, ...]]]
_FLOOR = 1e-12


class FeatureError(ValueError):
    """The feature spec does not fit the update's layout (no selected tensor, wrong length)."""


@dataclass(frozen=True)
class FeatureSpec:
    """What a probe reads from an update; stored in the probe artifact with the layout it applies to."""

    modules: tuple[str, ...] = ()  # substrings of tensor names to keep; () = every communicated tensor
    include_a: bool = True  # use lora_A tensors too when the layout has them (variant 'lora')
    norm_stats: bool = True
    sketch_dim: int = 0  # 0 = no sketch
    sketch_seed: int = 0

    def __post_init__(self) -> None:
        if self.sketch_dim < 0:
            raise FeatureError(f"sketch_dim must be >= 0, got {self.sketch_dim}")
        object.__setattr__(self, "modules", tuple(self.modules))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "modules": list(self.modules)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(**{**data, "modules": tuple(data.get("modules", ()))})


def selected(lay: Layout, spec: FeatureSpec) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each tensor the probe reads, in layout order; FeatureError if none."""
    out, offset = [], 0
    for name, shape in lay:
        n = math.prod(shape)
        keep = (".lora_B." in name or spec.include_a) and (
            not spec.modules or any(m in name for m in spec.modules)
        )
        if keep:
            out.append((name, offset, n))
        offset += n
    if not out:
        raise FeatureError(f"feature spec {spec.modules or 'all'} selects no tensor of the layout")
    return out


def feature_dim(lay: Layout, spec: FeatureSpec) -> int:
    sel = selected(lay, spec)
    body = spec.sketch_dim or sum(n for _, _, n in sel)
    return body + (len(sel) if spec.norm_stats else 0)


def _sketch(x: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    bucket = torch.randint(0, dim, (x.numel(),), generator=g)
    sign = torch.randint(0, 2, (x.numel(),), generator=g, dtype=torch.int8).double() * 2 - 1
    return torch.zeros(dim, dtype=torch.float64).index_add_(0, bucket, x * sign)


def extract(vec: torch.Tensor, lay: Layout, spec: FeatureSpec) -> torch.Tensor:
    """Feature vector (float64, CPU) of one flat update; FeatureError if it does not fit the layout."""
    total = sum(math.prod(s) for _, s in lay)
    if vec.dim() != 1 or vec.numel() != total:
        raise FeatureError(f"update has shape {tuple(vec.shape)}, the probe's layout needs ({total},)")
    x = vec.detach().to("cpu", torch.float64)
    sel = selected(lay, spec)
    parts = [x[o : o + n] for _, o, n in sel]
    body = torch.cat(parts)
    norm = float(body.norm())
    body = body / norm if norm > 0 else body
    if spec.sketch_dim:
        body = _sketch(body, spec.sketch_dim, spec.sketch_seed)
    if not spec.norm_stats:
        return body
    stats = torch.tensor([math.log10(max(float(p.norm()), _FLOOR)) for p in parts], dtype=torch.float64)
    return torch.cat([body, stats])


def extract_many(vecs: torch.Tensor, lay: Layout, spec: FeatureSpec) -> torch.Tensor:
    """Features of a stack of updates [n, d] -> [n, feature_dim]."""
    return torch.stack([extract(v, lay, spec) for v in vecs])
