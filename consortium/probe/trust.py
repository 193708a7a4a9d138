"""Per-client trust from probe verdicts: Beta counts with time decay (step level) and evidence freezing.

Both are pure functions of a client's verdict history, which is itself recomputable from public records,
so the weights they produce can be audited like any other part of the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence


def beta_trust(
    counts: Sequence[tuple[float, float]], decay: float = 0.8, prior: tuple[float, float] = (1.0, 1.0)
) -> float:
    """Posterior mean a / (a + b) of a Beta over 'this client trains benignly', oldest round first.

    Each round's (benign steps, harmful steps) are added after the earlier evidence is multiplied by
    `decay` (in [0, 1]; 1 = never forget), so a client that turns malicious loses trust within a few
    rounds however long its benign record. The prior stays undecayed: it is not evidence.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    a = b = 0.0
    for benign, harmful in counts:
        if benign < 0 or harmful < 0:
            raise ValueError(f"step counts must be >= 0, got ({benign}, {harmful})")
        a, b = decay * a + benign, decay * b + harmful
    a0, b0 = prior
    return (a + a0) / (a + a0 + b + b0)


def frozen_verdict(verdicts: Sequence[bool], m: int) -> bool | None:
    """After `m` consecutive identical verdicts (True = malicious), the client is frozen with that
    verdict for good: later verdicts no longer change it. None while not frozen (or m = 0: off)."""
    if m <= 0:
        return None
    streak, last = 0, None
    for v in verdicts:
        streak = streak + 1 if v == last else 1
        last = v
        if streak >= m:
            return v
    return None
