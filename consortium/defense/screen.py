"""Screening before aggregation: public, deterministic checks that catch updates with no training in them.

Robust aggregators look for updates far from the others; a free rider's update is the opposite, empty
or a replay of the last global step (public), and Krum-style rules even prefer it because it sits close
to everyone. Two checks, both pure functions of the committed updates and the last global step:
- an update shorter than `min_norm` x the median update norm;
- an update whose cosine with the last global step is at least `stale_cosine`.
"""

from __future__ import annotations

import torch


def screen(
    updates: torch.Tensor, last_step: torch.Tensor | None, min_norm: float, stale_cosine: float
) -> dict[int, str]:
    """Row index -> why the update is screened out. `min_norm = 0` and `stale_cosine > 1` turn a check off."""
    if updates.shape[0] == 0:
        return {}
    x = updates.double()
    norms = x.norm(dim=1)
    median = float(norms.median())
    last = None if last_step is None else last_step.to(x.device).double()
    last_norm = 0.0 if last is None else float(last.norm())
    out: dict[int, str] = {}
    for i in range(x.shape[0]):
        n = float(norms[i])
        if min_norm > 0 and n <= min_norm * median:
            out[i] = f"update norm {n:.3g} is at most {min_norm:g} x the median {median:.3g}"
        elif last is not None and last_norm > 0 and n > 0:
            cos = float(torch.dot(x[i], last) / (n * last_norm))
            if cos >= stale_cosine:
                out[i] = f"update replays the last global step (cosine {cos:.4f})"
    return out
