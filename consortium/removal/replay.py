"""`exact` and `recover`: replay the rounds from the first removed one without the removed participants.

Both run the run's own round (`consortium.protocol.RoundRunner` over a `MemoryLedger`, the same
screen + rule + DP pipeline, the round seed derived from the new global model) with the updates of
every other participant. Each replayed round is of one kind (`consortium.removal.schedule`):

- reused: the first replayed round starts from the recorded start model, so each participant's
  recorded update of that round *is* what its deterministic local training with its recorded seed
  gives (checked bit for bit in tests/test_removal.py): it is reused, with its probe evidence.
- exact: every other participant trains from the *new* global model on its own shard with its
  recorded seed (`local_seed(run seed, round, index)`) for the full `train.local_steps`.
- estimated (recover only): each participant's update is estimated from the history, not trained.

`exact` makes every round after the first exact (and reuses any round whose start model is the
recorded one): from the participant's first round, a retraining from scratch over the same shards.

`recover` follows FedRecover's schedule (Cao et al. 2023): the first round reused, optionally W
warm-up rounds exact, the middle rounds estimated, the last K rounds exact (default max(1, floor(0.3 x
replayed rounds))), and optionally every T-th middle round exact (FedRecover's periodic correction).
An estimated update is, by default ("recorded"), the participant's recorded update itself: the
committed original blob, which the audit checks byte for byte. With `estimate="lbfgs"` it is
FedRecover's estimate, the recorded update plus an L-BFGS Hessian-vector correction `H (w_new -
w_old)` built from the participant's exact rounds before it (`consortium.removal.curvature`; it needs
exact rounds before the estimated ones: warm-up or periodic): a new blob, which the audit recomputes
from the public records bit for bit. Either way the estimated updates go through the round pipeline
from the *new* global model, so the candidates differ from the original's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from consortium.protocol import LedgerRound, MemoryLedger, RoundRunner, TrainFn
from consortium.removal.curvature import Curvature, model_change, observe_exact
from consortium.removal.schedule import default_exact_rounds, schedule
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


def _recorded(
    train: TrainFn,
    old: RoundRecord,
    source: BlobStore,
    layout: Any,
    evidence: dict | None,
    adjust: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> TrainFn:
    """Each participant's recorded update of round `old`, with its probe evidence, untrained: a reused
    round (the recorded start model: what its training gives) or an estimated one (`adjust`: the
    L-BFGS estimate from it, else the recorded update itself). One with no recorded update trains."""
    mine = {c.participant: c for c in old.commitments}

    def reused(pid: str, start: torch.Tensor) -> tuple[torch.Tensor, int]:
        if pid not in mine:
            return train(pid, start)
        if evidence is not None and pid in old.evidence:
            evidence[pid] = source.get_tensors(old.evidence[pid])["snapshots"]
        vec = get_vector(source, mine[pid].blob, layout)
        return (vec if adjust is None else adjust(pid, vec)), mine[pid].n_examples

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
    exact_rounds: int | None = None,
    correct_every: int = 0,
    on_round: Callable[[int], None] = lambda r: None,
    reuse: bool = True,
    warmup_rounds: int = 0,
    estimate: str = "recorded",
) -> ReplayResult:
    """Rounds `src.from_round..` without `src.removed`, new blobs into `store` (which already holds the
    kept rounds' and, for recover, the replaced rounds' blobs). `sim` is a `consortium.sim.Simulation`
    of the run's config. recover: the `warmup_rounds` after the first, the last `exact_rounds` rounds
    (None: the default) and every `correct_every`-th middle one exact, the others after the first
    estimated by `estimate` ("recorded" or "lbfgs"). exact: `reuse=False` retrains the first round too
    (the from-scratch reference of bench/removal.py)."""
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
    n = len(src.replaced)
    if method == "recover":
        k = default_exact_rounds(n) if exact_rounds is None else exact_rounds
        kinds = schedule(n, k, correct_every, warmup_rounds)
    else:
        kinds = ["exact"] * n
    others = [p.name for p in sim.participants if p.name not in src.removed]
    out = ReplayResult()
    global_hash = src.start
    curv = Curvature() if method == "recover" and estimate == "lbfgs" else None
    for old, kind in zip(src.replaced, kinds, strict=True):
        t0 = time.perf_counter()
        start = get_vector(store, global_hash, layout)
        if method == "exact" and reuse and global_hash == old.global_in:
            kind = "reused"  # the recorded start model: the recorded updates are what training gives
        trained: list[str] = []
        train = _counted(sim.train_fn(old.round, last_step), trained)
        if kind != "exact":
            adjust = None
            if curv is not None and kind == "estimated":
                v = model_change(store, layout, global_hash, old)
                adjust = lambda pid, vec, v=v: curv.estimate(pid, vec, v)  # noqa: E731
            train = _recorded(train, old, src.store, layout, evidence, adjust)
        rec, cand = runner.run_round(global_hash, others, train)
        if curv is not None and kind == "exact":
            observe_exact(curv, store, layout, rec.global_in, rec.commitments, old)
        global_out = rec.global_out or global_hash
        if global_out != global_hash:
            last_step = get_vector(store, global_out, layout) - start
        out.seconds += time.perf_counter() - t0
        out.local_steps += steps * len(trained)
        out.rounds.append(
            {
                "round": rec.round,
                "kind": kind,
                "seed": rec.seed,
                "global_in": rec.global_in,
                "global_out": global_out,
                "commitments": [c.__dict__ for c in rec.commitments],
                "root": rec.root,
                "evidence": rec.evidence,
                "flagged": cand.flagged,
                "weights": dict(zip(cand.clients, cand.result.weights.tolist(), strict=True)),
                "local_steps": steps,
                "trained": trained,  # who trained; the others' recorded updates were used (`_recorded`)
            }
        )
        global_hash = global_out
        on_round(old.round)
    return out
