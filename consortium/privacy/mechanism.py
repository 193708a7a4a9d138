"""Clipping and Gaussian noise for client-level DP-FedAvg: pure torch functions, seeded and recomputable.

Adjacency is "zero-out" at the level of an organisation: two runs are neighbours when one organisation's
update is replaced by nothing (zero); the claimed sample counts (FedAvg's weights) are public records.
Against replacing one organisation's data by arbitrary other data, group privacy doubles ε.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from consortium.defense.core import CACHE_ELEMS, exact_row_norms, map_chunks, work_chunks

Mode = Literal["central", "distributed"]
MEAN_RULES = frozenset({"fedavg"})  # the aggregate is the weighted mean with public weights
CENTRAL_TAG = "dp-central"  # kept apart from the defence's use of the same round seed


def clip_updates(updates: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each row of [n, d] `updates` to L2 norm at most `clip`; returns (clipped, pre-clip norms).

    Norms and scales are computed in float64 and each row is scaled once, so a clipped row's norm is
    `clip` up to the float32 rounding of its entries (relative 2^-24)."""
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    # chunked, no float64 copy of all the updates; the same bits as the float64 norm and product of all
    norms = exact_row_norms(updates)
    scale = torch.where(norms > clip, clip / norms.clamp_min(1e-300), torch.ones_like(norms))
    clipped = torch.empty_like(updates)
    scale_col = scale[:, None].to(updates.device)

    def work(_: int, cols: slice) -> None:
        clipped[:, cols] = (updates[:, cols].to(torch.float64) * scale_col).to(updates.dtype)

    map_chunks(updates, work_chunks(updates, updates.shape[0], CACHE_ELEMS), work)
    return clipped, norms


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed % 2**63)
    return g


def central_noise(dim: int, std: float, seed: int) -> torch.Tensor:
    """N(0, std²) in float32 of length `dim` from a CPU generator seeded with `seed`: anyone holding the
    seed recomputes it bit for bit (same torch build)."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    return torch.randn(dim, generator=_generator(seed), dtype=torch.float32) * std


def noise_seed(round_seed: int, tag: str = CENTRAL_TAG) -> int:
    """The central noise's seed: the round's public seed under a tag of its own (the defences draw
    from the bare round seed; the same stream must not serve both)."""
    return int.from_bytes(hashlib.sha256(f"{tag}:{round_seed}".encode()).digest()[:8], "big") >> 1


def distributed_noise_share(dim: int, std_total: float, n_participants: int, seed: int) -> torch.Tensor:
    """One participant's share N(0, std_total² / n): n independent shares sum to N(0, std_total²).

    With `std_total = z·C` the sum of n clipped updates carries the noise central DP would add to it,
    and their uniform mean (sum / n) the std z·C/n that central mode adds to the mean. Under weighted
    averaging Σ wᵢ(uᵢ + eᵢ), the mean's noise std is std_total/√n · √(Σ wᵢ²) against a sensitivity of
    C · max wᵢ; `DpRule.finish` reports the multiplier that results (equal to z for uniform weights
    and all n present, lower otherwise). `seed` is the participant's own, private: nobody else can
    recompute (and subtract) the share."""
    if n_participants < 1:
        raise ValueError(f"n_participants must be >= 1, got {n_participants}")
    return central_noise(dim, std_total / math.sqrt(n_participants), seed)


@dataclass(frozen=True)
class DpRule:
    """The public DP part of an aggregation rule. `planned` is how many updates a round is sized for
    (each distributed share is std z·C/√planned)."""

    mode: Mode
    clip: float
    noise_multiplier: float
    planned: int = 1

    @property
    def share_std(self) -> float:
        return self.noise_multiplier * self.clip / math.sqrt(self.planned)

    def clip_rows(self, updates: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Central mode clips every committed update before the screen; distributed mode must not
        (a committed update is already clipped and noised by its owner)."""
        if self.mode != "central":
            return updates, {}
        clipped, norms = clip_updates(updates, self.clip)
        return clipped, {
            "pre_clip_norm_median": float(norms.median()),
            "clipped_fraction": float((norms > self.clip).double().mean()),
        }

    def finish(
        self, aggregate: torch.Tensor, aggregator: str, kept_weights: torch.Tensor, round_seed: int
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The aggregate with central noise added (central mode), and the round's effective noise
        multiplier for the accountant (None: no update entered, nothing to account)."""
        info: dict[str, Any] = {"mode": self.mode, "clip": self.clip, "kept": len(kept_weights)}
        if len(kept_weights) == 0 or float(kept_weights.sum()) <= 0:
            return aggregate, info | {"noise_multiplier_effective": None}
        w = kept_weights.to(torch.float64) / kept_weights.to(torch.float64).sum()
        mean_rule = aggregator in MEAN_RULES
        if self.mode == "central":
            if mean_rule:
                sensitivity = self.clip * float(w.max())
            else:  # any rule: force the aggregate into the C-ball, whose diameter bounds the change
                aggregate = clip_updates(aggregate[None], self.clip)[0][0]
                sensitivity = 2 * self.clip
            std = self.noise_multiplier * sensitivity
            if std > 0:
                aggregate = aggregate + central_noise(aggregate.numel(), std, noise_seed(round_seed))
            z_eff = self.noise_multiplier
        elif mean_rule:  # distributed: the mean of the shares
            sensitivity = self.clip * float(w.max())
            std = self.share_std * math.sqrt(float((w**2).sum()))
            z_eff = std / sensitivity
        else:  # distributed, other rules: post-processing of the noised updates, each its own mechanism
            sensitivity, std = self.clip, self.share_std
            z_eff = std / sensitivity
        return aggregate, info | {
            "sensitivity": sensitivity,
            "noise_std": std,
            "noise_multiplier_effective": z_eff,
        }
