"""FedRecover's estimate of a participant's update at a model it never trained from (Cao et al. 2023).

A recover removal replays rounds from a new global model w_new where the original run trained from
w_old. In an estimated round a participant's update at w_new is taken as its recorded update at w_old
plus a correction for the change of model: u(w_new) ~ u(w_old) + H (w_new - w_old), H the Jacobian of
its local training (FedRecover: the integrated Hessian of the Cauchy mean value theorem). H is never
formed: L-BFGS approximates the product H v from the participant's own pairs (s, y) of earlier exact
rounds, s = w_new - w_old of that round and y = its exact update minus its recorded one (the compact
form of Byrd, Nocedal and Schnabel 1994, Theorem 2.2; FedRecover's Algorithm 1), the latest `buffer`
pairs (FedRecover keeps 2).

Two choices that are ours. A pair whose curvature s.y is too small against |s| |y| is skipped (its
inverse would blow up: standard L-BFGS practice). The correction's length is capped at the recorded
update's: two pairs approximate H only near their span, and an estimate many times the update's own
length is a wrong one (FedRecover's "abnormality fixing" retrains such a participant; capping costs no
training, so the schedule's cost stays what it says).

Everything is a pure function of public records (global models and committed updates in the removal's
store), computed with order-fixed float64 sums (`gram_v2`) and element-wise float64 arithmetic, so the
audit recomputes every estimate bit for bit (`consortium.removal.verify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from consortium.defense.gram_v2 import gram_v2
from consortium.round.records import Layout, get_vector
from consortium.store import BlobStore

BUFFER = 2  # pairs per participant, as FedRecover
MIN_CURVATURE = 1e-6  # |s.y| / (|s| |y|) below this: the pair is skipped


@dataclass
class Curvature:
    """Each participant's latest (s, y) pairs from exact rounds, and the estimates they give."""

    buffer: int = BUFFER
    pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)

    def observe(self, pid: str, s: torch.Tensor, y: torch.Tensor) -> None:
        """Keep (s, y) for `pid` unless its curvature is too small to invert."""
        g = gram_v2(torch.stack([s, y]))
        ss, sy, yy = float(g[0, 0]), float(g[0, 1]), float(g[1, 1])
        if ss == 0.0 or yy == 0.0 or abs(sy) < MIN_CURVATURE * (ss * yy) ** 0.5:
            return
        kept = self.pairs.setdefault(pid, [])
        kept.append((s, y))
        del kept[: -self.buffer]

    def estimate(self, pid: str, recorded: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`recorded` + B v, B the L-BFGS approximation of `pid`'s Jacobian from its pairs; the recorded
        update itself where it has none, v is zero or the small system is singular."""
        pairs = self.pairs.get(pid, [])
        m = len(pairs)
        if m == 0:
            return recorded
        x = torch.stack([*(s for s, _ in pairs), *(y for _, y in pairs), v])
        g = gram_v2(x)
        if float(g[2 * m, 2 * m]) == 0.0:
            return recorded
        sts, a = g[:m, :m], g[:m, m : 2 * m]  # a[i, j] = s_i . y_j
        sigma = float(a[m - 1, m - 1] / sts[m - 1, m - 1])
        low = torch.tril(a, -1)
        mat = torch.cat(
            [torch.cat([sigma * sts, low], 1), torch.cat([low.T, -torch.diag(torch.diagonal(a))], 1)]
        )
        rhs = torch.cat([sigma * g[:m, 2 * m], g[m : 2 * m, 2 * m]])
        try:
            c = torch.linalg.solve(mat, rhs)
        except RuntimeError:  # singular: no estimate of H along these pairs
            return recorded
        if not bool(torch.isfinite(c).all()):
            return recorded
        corr = sigma * v.double()
        for i, (s, y) in enumerate(pairs):
            corr = corr - (sigma * float(c[i])) * s.double() - float(c[m + i]) * y.double()
        lengths = gram_v2(torch.stack([corr.float(), recorded]))
        have, cap = float(lengths[0, 0]) ** 0.5, float(lengths[1, 1]) ** 0.5
        if have > cap:
            corr = corr * (cap / have)
        return recorded + corr.float()


def observe_exact(
    curv: Curvature,
    store: BlobStore,
    layout: Layout,
    global_in: str,
    commitments: Sequence[Any],
    original: Any,
) -> None:
    """Add the pairs of an exact round (its `global_in` and `commitments`) against `original`, the
    run's record of the same round; the store holds both rounds' blobs. A round that starts from the
    recorded model (s = 0) gives no pair."""
    if global_in == original.global_in:
        return
    s = model_change(store, layout, global_in, original)
    theirs = {c.participant: c.blob for c in original.commitments}
    for c in commitments:
        if c.participant in theirs:
            y = get_vector(store, c.blob, layout) - get_vector(store, theirs[c.participant], layout)
            curv.observe(c.participant, s, y)


def model_change(store: BlobStore, layout: Layout, global_in: str, original: Any) -> torch.Tensor:
    """v = w_new - w_old of a replayed round against the run's record of it."""
    return get_vector(store, global_in, layout) - get_vector(store, original.global_in, layout)
