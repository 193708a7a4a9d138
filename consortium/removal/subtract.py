"""`subtract`: take the removed participants' weighted share out of every accepted aggregate.

Round t's recorded step is `global_out - global_in = server_lr * sum_i w_i u_i` (the rule's weights
`w`, summing to 1 over the kept updates). Without the removed set K the step becomes
`(step - server_lr * sum_{k in K} w_k u_k) / (1 - sum_{k in K} w_k)`: for FedAvg exactly the FedAvg
of the others' recorded updates. The new steps are chained from the first replaced round's start.
It ignores that every later update was trained from a model that contained K (forward coupling):
the baseline that shows why `exact` and `recover` are needed. A pure function of the records, so the
audit recomputes it bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from consortium.removal.source import RemovalInputError, RoundRecord
from consortium.round.records import Layout, get_vector
from consortium.store import BlobStore


def subtract_step(
    store: BlobStore, layout: Layout, rec: RoundRecord, removed: Sequence[str], server_lr: float
) -> torch.Tensor:
    """Round `rec`'s recorded step with the removed participants' weighted share taken out (a rejected
    chain round moved nothing: nothing to take out)."""
    if rec.global_out == rec.global_in:
        return torch.zeros_like(get_vector(store, rec.global_in, layout))
    step = (get_vector(store, rec.global_out, layout) - get_vector(store, rec.global_in, layout)).double()
    share = torch.zeros_like(step)
    gone = 0.0
    for c in rec.commitments:
        w = rec.weights.get(c.participant, 0.0)
        if c.participant in removed and w != 0.0:
            share += w * get_vector(store, c.blob, layout).double()
            gone += w
    if gone == 0.0:
        return step.float()
    if gone >= 1.0 - 1e-12:  # the round's aggregate was theirs alone: without them nothing moved
        return torch.zeros_like(step, dtype=torch.float32)
    return ((step - server_lr * share) / (1.0 - gone)).float()


def subtract_rounds(
    store: BlobStore,
    layout: Layout,
    start: str,
    rounds: Sequence[RoundRecord],
    removed: Sequence[str],
    server_lr: float,
) -> list[torch.Tensor]:
    """The global vector after each of `rounds`, chained from the blob `start` without `removed`."""
    vec = get_vector(store, start, layout)
    out = []
    for rec in rounds:
        vec = vec + subtract_step(store, layout, rec, removed, server_lr)
        out.append(vec)
    return out


def check_linear(variant: str) -> None:
    """FLoRA's candidate is a re-projected product sum, not linear in the flat updates."""
    if variant == "flora":
        raise RemovalInputError(
            "--method subtract: lora.variant 'flora' re-projects the product sum, so a share cannot be "
            "subtracted from its aggregate; use exact or recover"
        )
