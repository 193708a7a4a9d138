"""The types every rule shares: its knobs (`DefenseParams`), what it gets (`RuleContext`) and returns
(`AggregateResult`), and the error that names a client. Torch and the stdlib only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from consortium.defense.finite import FiniteCheck


class UpdateError(ValueError):
    """A client's update (or its weight) is unusable; the message names the client."""


AGGREGATION_VERSIONS = (1, 2, 3)
"""The kernel definitions a run may name (`DefenseParams.aggregation_version`); none is ever changed."""


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@dataclass(frozen=True)
class DefenseParams:
    """Knobs of every rule; the run config's `[defense]` table maps 1:1 onto these fields.

    A plain stdlib dataclass: pydantic validates it directly (and `__pydantic_config__` forbids unknown
    keys) without this package importing pydantic. Ranges that do not depend on the number of clients are
    checked here; those that do (`f < n`, Bulyan's `n >= 4f + 3`, ...) are checked when a rule runs.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    f: int | None = None
    """Assumed maximum number of malicious clients (Krum, Multi-Krum, Bulyan). None = the largest the
    rule tolerates: `max(0, (n - 3) // 2)` for Krum / Multi-Krum (n > 2f + 2), `max(0, (n - 3) // 4)`
    for Bulyan (n >= 4f + 3). An explicit f only needs `f < n` for Krum / Multi-Krum."""
    multi_krum_m: int | None = None
    """Clients Multi-Krum keeps (1..n). None = n - f."""
    trim_ratio: float = 0.1
    """Trimmed mean: fraction of clients cut at EACH end per coordinate, 0 <= x < 0.5;
    `floor(trim_ratio * n)` values are cut per end."""
    norm_bound: float | None = None
    """Norm bounding: clip each update to this L2 norm (> 0). None = the median of the clients' norms."""
    flame_noise: float = 0.001
    """FLAME: Gaussian noise std = flame_noise * S, S the median L2 norm (lambda in the paper; >= 0)."""
    flame_min_cluster_size: int | None = None
    """FLAME: HDBSCAN min_cluster_size (>= 2). None = n // 2 + 1 (the admitted cluster is a majority)."""
    foolsgold_confidence: float = 1.0
    """FoolsGold: confidence kappa of the logit (> 0)."""
    rlr_threshold: int | None = None
    """RLR: a coordinate's learning rate is flipped when |sum_i sign(u_i)| < this count (1..n).
    None = max(1, n // 4)."""
    screen_min_norm: float = 0.05
    """Screen (before any rule): drop updates at most this share of the median update norm (0 = off)."""
    screen_stale_cosine: float = 0.99
    """Screen: drop updates at least this aligned with the last global step, a free rider's replay
    (above 1 = off)."""
    chunk_elems: int = 1 << 26
    """Column-chunk size of the [n, d] kernels, in elements of an [n, chunk] block (>= 1)."""
    aggregation_version: int = 1
    """Which definition of the kernels the rules use; the run's config records it, so the audit
    recomputes each aggregate with the run's version. 1 (what a config without the key means: every
    run made before versions existed): the float64 Gram matrix over `chunk_elems` chunks. 2: the Gram
    matrix (Krum, Multi-Krum, Bulyan, FLAME, FoolsGold) from float32 products over fixed column chunks
    added in float64 in chunk order, ~2-3x faster, bit-identical whatever the thread count
    (`consortium.defense.gram_v2`, docs/aggregation_speed.md); the other rules as in 1. 3: version 2's
    Gram matrix, and every rule's weighted sum and norm bounding's norms from float32 products over fixed
    column chunks (`consortium.defense.sums_v3`), also bit-identical whatever the thread count: what the
    presets (new runs) use. The coordinate-wise rules (median, trimmed mean, Bulyan's second stage), the
    screen and FLTrust's norms are the same in all three."""

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"defense.{name} must be {want}, got {getattr(self, name)!r}")

        if self.f is not None and not (_is_int(self.f) and self.f >= 0):
            raise bad("f", "an integer >= 0 or None")
        if self.multi_krum_m is not None and not (_is_int(self.multi_krum_m) and self.multi_krum_m >= 1):
            raise bad("multi_krum_m", "an integer >= 1 or None")
        if not (_is_num(self.screen_min_norm) and 0 <= self.screen_min_norm < 1):
            raise bad("screen_min_norm", "a number in [0, 1)")
        if not (_is_num(self.screen_stale_cosine) and self.screen_stale_cosine > 0):
            raise bad("screen_stale_cosine", "a number > 0 (above 1 turns the check off)")
        if not (_is_num(self.trim_ratio) and 0 <= self.trim_ratio < 0.5):
            raise bad("trim_ratio", "a number in [0, 0.5)")
        if self.norm_bound is not None and not (_is_num(self.norm_bound) and 0 < self.norm_bound < math.inf):
            raise bad("norm_bound", "a finite number > 0 or None")
        if not (_is_num(self.flame_noise) and 0 <= self.flame_noise < math.inf):
            raise bad("flame_noise", "a finite number >= 0")
        if self.flame_min_cluster_size is not None and not (
            _is_int(self.flame_min_cluster_size) and self.flame_min_cluster_size >= 2
        ):
            raise bad("flame_min_cluster_size", "an integer >= 2 or None")
        if not (_is_num(self.foolsgold_confidence) and 0 < self.foolsgold_confidence < math.inf):
            raise bad("foolsgold_confidence", "a finite number > 0")
        if self.rlr_threshold is not None and not (_is_int(self.rlr_threshold) and self.rlr_threshold >= 1):
            raise bad("rlr_threshold", "an integer >= 1 or None")
        if not (_is_int(self.chunk_elems) and self.chunk_elems >= 1):
            raise bad("chunk_elems", "an integer >= 1")
        if not (_is_int(self.aggregation_version) and self.aggregation_version in AGGREGATION_VERSIONS):
            raise bad("aggregation_version", f"one of {', '.join(map(str, AGGREGATION_VERSIONS))}")


DEFAULT_PARAMS = DefenseParams()


@dataclass
class AggregateResult:
    """What a rule returns.

    `aggregate` has the updates' dtype and device. `weights` and `flags` live on the CPU (they are small and
    go into reports). `weights` is each client's effective share of the aggregate: for rules that average
    whole updates it is the normalised coefficient of the client's (possibly rescaled) update; for
    coordinate-wise rules (median, trimmed mean, Bulyan's second stage) it is the client's weight in each
    coordinate averaged over the d coordinates. It sums to 1, or is all 0 if nothing was admitted.
    """

    aggregate: torch.Tensor
    weights: torch.Tensor
    flags: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may use besides the updates and the sample weights."""

    params: DefenseParams
    clients: tuple[str, ...]
    seed: int = 0
    root_update: torch.Tensor | None = None
    history: torch.Tensor | None = None
    finite: FiniteCheck | None = None
    """Set by `aggregate`: the rule's kernels settle the updates' finiteness with it (pass it on as their
    `check`); None when a rule is called directly."""
