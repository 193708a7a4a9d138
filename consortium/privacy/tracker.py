"""A run's privacy bookkeeping: z from a target ε, the running ε per participant, and the budget stop.

Who proposes in a round is public (the contract's draw, or everyone under fedavg), so a round costs a
participant a full Gaussian mechanism (q = 1) when its update entered and nothing otherwise: there is
no amplification by subsampling, which needs a secret sample. The run's ε is the worst participant's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consortium.privacy.accountant import (
    PrivacyBudgetExceeded,
    epsilon_of_rounds,
    noise_multiplier_for,
)

if TYPE_CHECKING:
    from consortium.config import PrivacySection, RunConfig


def planned_updates(cfg: RunConfig) -> int:
    """Updates a round is sized for: every participant under fedavg, the drawn proposers on chain."""
    return cfg.participants if cfg.protocol == "central" else cfg.chain.roles(cfg.participants)[0]


def resolved_noise_multiplier(cfg: RunConfig) -> float:
    """`privacy.noise_multiplier`, or the z that `target_epsilon` needs if a participant entered every
    round (q = 1, T = rounds): the worst case the run can reach."""
    pv = cfg.privacy
    if pv.noise_multiplier is not None:
        return pv.noise_multiplier
    assert pv.target_epsilon is not None and pv.delta is not None  # the config validator's guarantee
    return noise_multiplier_for(pv.target_epsilon, 1.0, cfg.rounds, pv.delta, pv.accountant)


def resolve(cfg: RunConfig) -> RunConfig:
    """The config with `target_epsilon` turned into the `noise_multiplier` it needs: the run directory's
    config then names z itself, and the audit rebuilds the same rule without calibrating again."""
    pv = cfg.privacy
    if not pv.on or pv.target_epsilon is None:
        return cfg
    z = resolved_noise_multiplier(cfg)
    return cfg.model_copy(
        update={"privacy": pv.model_copy(update={"noise_multiplier": z, "target_epsilon": None})}
    )


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


@dataclass
class PrivacyTracker:
    """ε so far, per participant, from the effective multiplier of every round its update entered.

    `model` is the guarantee for whoever sees the global models (the candidates) only; `store` the one
    for whoever also reads the committed updates in the blob store: none in central mode (the updates
    are public and unnoised), each update's own share of the noise in distributed mode."""

    section: PrivacySection
    noise_multiplier: float
    planned: int
    model: dict[str, list[float]] = field(default_factory=dict)
    store: dict[str, list[float]] = field(default_factory=dict)
    _cache: dict[tuple[float, ...], float] = field(default_factory=dict)

    @property
    def delta(self) -> float:
        return self.section.delta or 0.0

    def _eps(self, zs: Iterable[float]) -> float:
        key = tuple(sorted(zs))
        if key not in self._cache:
            if not key:
                self._cache[key] = 0.0
            elif self.section.delta is None or min(key) <= 0:
                self._cache[key] = math.inf
            else:
                self._cache[key] = epsilon_of_rounds(key, self.delta, self.section.accountant)
        return self._cache[key]

    def epsilon(self) -> float:
        """The worst participant's ε for the global models so far."""
        return max((self._eps(zs) for zs in self.model.values()), default=0.0)

    def check_next(self, round_index: int) -> None:
        """Raise PrivacyBudgetExceeded if one more round at the planned multiplier could take a
        participant past `epsilon_budget` (checked before the round, so the run stops inside it)."""
        budget = self.section.epsilon_budget
        if budget is None:
            return
        now = self.epsilon()
        worst = max((self._eps([*zs, self.noise_multiplier]) for zs in self.model.values()), default=None)
        after = self._eps([self.noise_multiplier]) if worst is None else worst
        if after > budget:
            raise PrivacyBudgetExceeded(
                f"privacy.epsilon_budget: round {round_index + 1} would take ε from {now:.3f} to "
                f"{after:.3f}, past the budget {budget} (δ = {self.delta}); "
                f"the run stopped after {round_index} round(s)"
            )

    def record(self, entered: Iterable[str], dp_info: dict[str, Any] | None) -> dict[str, Any]:
        """Account one round whose committed updates came from `entered`; `dp_info` is the candidate's
        `info["dp"]` (None or no effective multiplier: nothing entered the aggregate). Returns the
        round's report entry."""
        z_eff = None if dp_info is None else dp_info.get("noise_multiplier_effective")
        names = sorted(set(entered))
        if z_eff is not None:
            share = self.noise_multiplier / math.sqrt(self.planned)
            for name in names:
                self.model.setdefault(name, []).append(z_eff)
                if self.section.mode == "distributed":
                    self.store.setdefault(name, []).append(share)
        by_name = {n: self._eps(zs) for n, zs in sorted(self.model.items())}
        store = None
        if self.section.mode == "distributed":
            store = max((self._eps(zs) for zs in self.store.values()), default=0.0)
        return {
            "epsilon": _finite(self.epsilon()),
            "epsilon_store": None if store is None else _finite(store),
            "delta": self.section.delta,
            "accountant": self.section.accountant,
            "noise_multiplier_effective": z_eff,
            "epsilon_by_participant": {n: _finite(e) for n, e in by_name.items()},
            **{k: v for k, v in (dp_info or {}).items() if k != "noise_multiplier_effective"},
        }


def tracker_for(cfg: RunConfig) -> PrivacyTracker | None:
    """The run's tracker (None when privacy is off); cfg must be `resolve`d."""
    if not cfg.privacy.on:
        return None
    return PrivacyTracker(cfg.privacy, resolved_noise_multiplier(cfg), planned_updates(cfg))


__all__ = ["PrivacyBudgetExceeded", "PrivacyTracker", "planned_updates", "resolve", "tracker_for"]
