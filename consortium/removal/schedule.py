"""Which replayed rounds of a removal are reused, estimated or retrained exactly (FedRecover's schedule).

A pure function of (replayed rounds, exact rounds K, correction period T), shared by `replay` and the
audit, which checks every round's recorded kind against it:

- "reused": the first replayed round starts from the recorded start model, so the others' recorded
  updates of that round are what their training gives; they are reused unchanged (free and exact);
- "estimated": a middle round; each remaining participant's update is estimated from the history
  (its recorded update of that round, docs/removal.md), not trained;
- "exact": the W rounds after the first (FedRecover's warm-up, default none), the last K rounds, and
  every T-th middle round when T > 0 (FedRecover's periodic correction): full local training from the
  new global model with the recorded seeds.

How an estimated round estimates (`ESTIMATES`): "recorded", the recorded update itself; "lbfgs",
FedRecover's estimate, the recorded update plus an L-BFGS Hessian-vector correction built from the
participant's exact rounds before it (`consortium.removal.curvature`).
"""

from __future__ import annotations

from dataclasses import asdict, astuple, dataclass, fields

KINDS = ("reused", "estimated", "exact")
EXACT_SHARE = 0.3  # default K: this share of the replayed rounds, at least one
ESTIMATES = ("recorded", "lbfgs")


@dataclass(frozen=True)
class Plan:
    """recover's schedule and estimate, as `removal.json` records them (under these field names)."""

    exact_rounds: int = 0
    correct_every: int = 0
    warmup_rounds: int = 0
    estimate: str = "recorded"

    def args(self) -> tuple[int, int, int, str]:
        """The fields in order: `schedule_problem`'s arguments after the round count."""
        return astuple(self)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


PLAN_KEYS = tuple(f.name for f in fields(Plan))


def default_exact_rounds(replayed: int) -> int:
    """max(1, floor(0.3 x replayed rounds))."""
    return max(1, int(EXACT_SHARE * replayed))


def schedule_problem(
    replayed: int, exact_rounds: int, correct_every: int, warmup_rounds: int = 0, estimate: str = "recorded"
) -> str | None:
    """Why (K, T, W, estimate) is not a schedule for `replayed` rounds, or None."""
    if estimate not in ESTIMATES:
        return f"--estimate {estimate!r}: expected one of {', '.join(ESTIMATES)}"
    if warmup_rounds < 0:
        return f"--warmup-rounds {warmup_rounds}: expected 0 or more"
    if warmup_rounds and 1 + warmup_rounds + exact_rounds > replayed:
        return (
            f"--warmup-rounds {warmup_rounds}: with the first round and the last {exact_rounds} exact, more "
            f"than the {replayed} replayed round(s)"
        )
    if exact_rounds < 0:
        return f"--exact-rounds {exact_rounds}: expected 0 or more"
    if exact_rounds > replayed:
        return f"--exact-rounds {exact_rounds}: more than the {replayed} replayed round(s)"
    if correct_every < 0:
        return f"--correct-every {correct_every}: expected 0 (off) or more"
    return None


def schedule(replayed: int, exact_rounds: int, correct_every: int = 0, warmup_rounds: int = 0) -> list[str]:
    """The kind of each of `replayed` rounds: round 0 reused, rounds 1..`warmup_rounds` and the last
    `exact_rounds` exact, every `correct_every`-th round in between exact (0: none), the others
    estimated."""
    problem = schedule_problem(replayed, exact_rounds, correct_every, warmup_rounds)
    if problem is not None:
        raise ValueError(problem)
    kinds = []
    for i in range(replayed):
        if i == 0:
            kinds.append("reused")
        elif (
            i <= warmup_rounds
            or i >= replayed - exact_rounds
            or (correct_every > 0 and i % correct_every == 0)
        ):
            kinds.append("exact")
        else:
            kinds.append("estimated")
    return kinds
