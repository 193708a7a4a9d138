"""(ε, δ) of repeated (subsampled) Gaussian mechanisms, via Google's `dp-accounting` (RDP and PLD).

A thin layer: the events are dp-accounting's own (`GaussianDpEvent`, `PoissonSampledDpEvent`,
`SelfComposedDpEvent`, `ComposedDpEvent`) and the inverse is its `calibrate_dp_mechanism`, so the
figures are the library's, not ours. z = 0 means no noise: ε is infinite.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import dp_accounting as dpa
from dp_accounting import pld, rdp

Method = Literal["rdp", "pld"]
METHODS: tuple[Method, ...] = ("rdp", "pld")


class PrivacyBudgetExceeded(RuntimeError):
    """The next round would take the run's ε past `privacy.epsilon_budget`: the run stops before it."""


@contextmanager
def _quiet() -> Iterator[None]:
    """dp-accounting's RDP logs (via absl) every fractional order it cannot evaluate; the order is
    dropped from the minimum, which is the documented behaviour, so the warnings are noise here."""
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _accountant(method: Method) -> dpa.PrivacyAccountant:
    if method == "rdp":
        return rdp.RdpAccountant()
    if method == "pld":  # pessimistic discretisation (ε rounded up); 1e-3 is within 1e-4 of the
        return pld.PLDAccountant(value_discretization_interval=1e-3)  # default 1e-4, ten times faster
    raise ValueError(f"accountant: unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _check(q: float, steps: int, delta: float) -> None:
    if not 0 < q <= 1:
        raise ValueError(f"sampling rate q must be in (0, 1], got {q}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def gaussian_event(z: float, q: float = 1.0) -> dpa.DpEvent:
    """One round: the Gaussian mechanism with noise multiplier z, Poisson-subsampled at rate q < 1."""
    event: dpa.DpEvent = dpa.GaussianDpEvent(z)
    return event if q == 1.0 else dpa.PoissonSampledDpEvent(q, event)


def epsilon(z: float, q: float, steps: int, delta: float, method: Method = "rdp") -> float:
    """ε after `steps` rounds of the Poisson-subsampled (rate q) Gaussian mechanism with multiplier z."""
    _check(q, steps, delta)
    if steps == 0:
        return 0.0
    if z <= 0:
        return math.inf
    acc = _accountant(method)
    with _quiet():
        acc.compose(dpa.SelfComposedDpEvent(gaussian_event(z, q), steps))
        return float(acc.get_epsilon(delta))


def epsilon_of_rounds(zs: Sequence[float], delta: float, method: Method = "rdp") -> float:
    """ε of one participant whose update entered rounds with effective multipliers `zs` (q = 1 each:
    who proposes is public, so there is no amplification by subsampling; see docs/privacy.md)."""
    _check(1.0, len(zs), delta)
    if not zs:
        return 0.0
    if min(zs) <= 0:
        return math.inf
    acc = _accountant(method)
    counts: dict[float, int] = {}
    for z in zs:
        counts[z] = counts.get(z, 0) + 1
    events = [dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), n) for z, n in sorted(counts.items())]
    with _quiet():
        acc.compose(dpa.ComposedDpEvent(events))
        return float(acc.get_epsilon(delta))


def noise_multiplier_for(
    target_epsilon: float, q: float, steps: int, delta: float, method: Method = "rdp"
) -> float:
    """The smallest z (to dp-accounting's calibration tolerance, rounded up) giving ε <= target."""
    _check(q, steps, delta)
    if target_epsilon <= 0:
        raise ValueError(f"target epsilon must be > 0, got {target_epsilon}")
    if steps == 0:
        return 0.0

    def calibrate(bracket: Any, tol: float) -> float:
        with _quiet():
            return dpa.calibrate_dp_mechanism(
                lambda: _accountant(method),
                lambda z: dpa.SelfComposedDpEvent(gaussian_event(z, q), steps),
                target_epsilon,
                delta,
                bracket,
                tol=tol,
            )

    if method == "rdp":
        return float(calibrate(dpa.LowerEndpointAndGuess(0.05, 1.0), 1e-5))
    # PLD's ε is at most RDP's, so z_rdp bounds z_pld from above (and a PLD at tiny z needs gigabytes)
    z_rdp = noise_multiplier_for(target_epsilon, q, steps, delta, "rdp")
    z = calibrate(dpa.ExplicitBracketInterval(max(0.05, z_rdp / 4), z_rdp), 1e-5)
    return float(z)
