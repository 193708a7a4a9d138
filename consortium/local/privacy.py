"""Distributed DP on the participant's side: clip one's own update and add one's share of the noise
before committing it (`docs/privacy.md`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from consortium.privacy import clip_updates, distributed_noise_share
from consortium.privacy.tracker import planned_updates

if TYPE_CHECKING:
    from consortium.config import RunConfig


def dp_share(delta: torch.Tensor, cfg: RunConfig, seed: int) -> torch.Tensor:
    """`delta` clipped to the config's norm plus this participant's noise share, seeded by `seed`
    (`seeds.private_noise_seed` for a node, `seeds.simulated_noise_seed` in a simulation). Unchanged
    unless `privacy.mode = "distributed"`."""
    pv = cfg.privacy
    if pv.mode != "distributed" or pv.clip is None:
        return delta
    clipped = clip_updates(delta[None], pv.clip)[0][0]
    z = pv.noise_multiplier or 0.0
    if z == 0:
        return clipped
    share = distributed_noise_share(delta.numel(), z * pv.clip, planned_updates(cfg), seed)
    return clipped + share
