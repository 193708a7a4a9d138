"""`exact` and `recover`: replay the rounds from the first removed one without the removed participants.

Both run the run's own round (`consortium.protocol.RoundRunner` over a `MemoryLedger`, the same
screen + rule + DP pipeline, the round seed derived from the new global model) with every other
participant training from the *new* global model on its own shard with its recorded seed
(`local_seed(run seed, round, index)`). They differ in the local step:

- exact: the run's full local training (`train.local_steps`), so the result is what a run without
  the removed participants would have computed from that round on; from their first round, a
  retraining from scratch over the same shards.
- recover: FedEraser's calibration (Liu et al. 2021): a short training of `calibration_steps` steps
  gives the update's direction, the participant's *recorded* update of that round its length
  (`|U_old| * U_cal / |U_cal|`). Chosen over FedRecover's L-BFGS estimation because our runs are a
  few rounds long: FedRecover's exact warm-up, periodic-correction and final-tuning rounds would be
  most of them, while the calibration's cost is a fixed fraction of every round's training and its
  result is still a pure function of committed updates, so the audit recomputes every candidate.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from consortium.protocol import LedgerRound, MemoryLedger, RoundRunner, TrainFn
from consortium.removal.source import RoundRecord, SourceRun
from consortium.round.pipeline import rule_from_config
from consortium.round.records import get_vector, vector_hash
from consortium.store import BlobStore


class SourceMismatch(RuntimeError):
    """A kept round of the original run does not recompute from its records."""


@dataclass
class ReplayResult:
    """The replayed rounds' records and what they cost in local training."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    local_steps: int = 0
    seconds: float = 0.0

    @property
    def final(self) -> str:
        return self.rounds[-1]["global_out"]


def calibration_steps(local_steps: int, fraction: float) -> int:
    """FedEraser's shorter calibration training: a fraction of the run's local steps, at least one."""
    return max(1, round(local_steps * fraction))


def _with_steps(sim: Any, steps: int) -> Any:
    """The simulation with `train.local_steps = steps` (same model, data, seeds; a shallow copy)."""
    short = copy.copy(sim)
    cfg = sim.cfg
    short.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"local_steps": steps})})
    return short


def _rescaled(train: TrainFn, recorded: dict[str, str], source: BlobStore, layout: Any) -> TrainFn:
    """FedEraser's calibrated update: the calibration's direction at the recorded update's length."""

    def calibrated(pid: str, start: torch.Tensor) -> tuple[torch.Tensor, int]:
        delta, n = train(pid, start)
        if pid not in recorded:
            return delta, n
        old = get_vector(source, recorded[pid], layout).double().norm()
        now = delta.double().norm()
        if float(now) == 0.0:
            return delta, n
        return (delta.double() * (old / now)).float(), n

    return calibrated


def _recorded(
    train: TrainFn, old: RoundRecord, source: BlobStore, layout: Any, evidence: dict | None
) -> TrainFn:
    """The replay's first round starts from the recorded start model, so each participant's recorded
    update of that round *is* what its deterministic local training with its recorded seed gives
    (checked bit for bit in tests/test_removal.py): reuse it, with its probe evidence, untrained."""
    mine = {c.participant: c for c in old.commitments}

    def reused(pid: str, start: torch.Tensor) -> tuple[torch.Tensor, int]:
        if pid not in mine:
            return train(pid, start)
        if evidence is not None and pid in old.evidence:
            evidence[pid] = source.get_tensors(old.evidence[pid])["snapshots"]
        return get_vector(source, mine[pid].blob, layout), mine[pid].n_examples

    return reused


def _counted(train: TrainFn, calls: list[str]) -> TrainFn:
    def counted(pid: str, start: torch.Tensor) -> tuple[torch.Tensor, int]:
        calls.append(pid)
        return train(pid, start)

    return counted


def _grow_kept(runner: RoundRunner, ledger: MemoryLedger, kept: list[RoundRecord]) -> torch.Tensor | None:
    """Fold the kept rounds into the runner's history and ledger as the run grew them; returns the
    last change of the global model before the replay (what an attacker's round view sees)."""
    last: torch.Tensor | None = None
    for rec in kept:
        cand = runner.public.candidate(
            rec.global_in, list(rec.commitments), rec.seed, root=rec.root, evidence=rec.evidence
        )
        if vector_hash(cand.vector, runner.layout) != rec.global_out:
            raise SourceMismatch(f"round {rec.round}: the recorded candidate does not recompute")
        runner.public.moved(rec.global_in, rec.global_out)
        ledger.rounds.append(
            LedgerRound(
                round=rec.round,
                global_in=rec.global_in,
                seed=rec.seed,
                commitments=list(rec.commitments),
                root=rec.root,
                evidence=dict(rec.evidence),
                candidate=rec.global_out,
                flagged=list(rec.flagged),
                accepted=True,
                global_out=rec.global_out,
            )
        )
        if rec.global_out != rec.global_in:
            last = get_vector(runner.store, rec.global_out, runner.layout) - get_vector(
                runner.store, rec.global_in, runner.layout
            )
    return last


def replay(
    sim: Any,
    src: SourceRun,
    store: BlobStore,
    method: str,
    calibration_fraction: float = 0.25,
    on_round: Callable[[int], None] = lambda r: None,
    reuse: bool = True,
) -> ReplayResult:
    """Rounds `src.from_round..` without `src.removed`, new blobs into `store` (which already holds the
    kept rounds' blobs). `sim` is a `consortium.sim.Simulation` of the run's config. `reuse=False`
    retrains the first round too (the from-scratch reference of bench/removal.py)."""
    cfg = sim.cfg
    layout = sim.layout
    ledger = MemoryLedger()
    root = getattr(sim, "_root_update", None)
    runner = RoundRunner(ledger, store, layout, rule_from_config(cfg), root=root)
    evidence = getattr(sim, "_evidence", None)
    if evidence is not None:
        runner.evidence = lambda pid: evidence.pop(pid, None)
    last_step = _grow_kept(runner, ledger, src.kept)
    steps = cfg.train.local_steps
    trainer_sim = sim
    if method == "recover":
        steps = calibration_steps(steps, calibration_fraction)
        trainer_sim = _with_steps(sim, steps)
    others = [p.name for p in sim.participants if p.name not in src.removed]
    out = ReplayResult()
    global_hash = src.start
    for old in src.replaced:
        t0 = time.perf_counter()
        start = get_vector(store, global_hash, layout)
        trained: list[str] = []
        train = _counted(trainer_sim.train_fn(old.round, last_step), trained)
        if method == "recover":
            recorded = {c.participant: c.blob for c in old.commitments}
            train = _rescaled(train, recorded, src.store, layout)
        if reuse and global_hash == old.global_in:
            train = _recorded(train, old, src.store, layout, evidence)
        rec, cand = runner.run_round(global_hash, others, train)
        global_out = rec.global_out or global_hash
        if global_out != global_hash:
            last_step = get_vector(store, global_out, layout) - start
        out.seconds += time.perf_counter() - t0
        out.local_steps += steps * len(trained)
        out.rounds.append(
            {
                "round": rec.round,
                "seed": rec.seed,
                "global_in": rec.global_in,
                "global_out": global_out,
                "commitments": [c.__dict__ for c in rec.commitments],
                "root": rec.root,
                "evidence": rec.evidence,
                "flagged": cand.flagged,
                "weights": dict(zip(cand.clients, cand.result.weights.tolist(), strict=True)),
                "local_steps": steps,
                "trained": trained,  # the others reused their recorded updates (`_recorded`)
            }
        )
        global_hash = global_out
        on_round(old.round)
    return out
