"""`consortium audit` of a removal run directory: the result follows from the public records.

Checked from the directory alone (config.toml, removal.json, store/, adapter/): the kept rounds'
candidates recompute to their recorded global models; then, per method,
- exact / recover: every replayed round chains from the previous one, has the seed the ledger derives
  from its input model, has no update of a removed participant and one of every other, and its
  candidate recomputed by the run's pipeline (`PublicHistory`, as every participant computes it) is
  the recorded global model with the recorded flags; each round's recorded kind is the one its
  method allows (recover: exactly FedRecover's schedule for the recorded exact rounds K, correction
  period T and warm-up rounds W, `consortium.removal.schedule`; exact: exact, or reused where the
  round starts from the recorded model), and every update of a reused or estimated round is the
  participant's original update of that round (same blob, example count and probe evidence), or, for
  recover's "lbfgs" estimate, the estimate recomputed from the original update and the participant's
  earlier exact rounds (`consortium.removal.curvature`), bit for bit;
- subtract: every new global model is the recorded round's step minus the removed share.
Finally the removal's global hash is the last round's output and the exported adapter holds it.
What cannot be checked from records: that the participants really trained (as in the original run).
When the original run directory is still where it was, its records are compared with the copies too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from consortium.audit.adapter import check_exported_adapter
from consortium.audit.report import AuditInputError, AuditReport
from consortium.audit.rounds import layout_of
from consortium.config import ConfigError
from consortium.protocol import round_seed
from consortium.removal.curvature import Curvature, model_change, observe_exact
from consortium.removal.schedule import KINDS, PLAN_KEYS, Plan, schedule, schedule_problem
from consortium.removal.source import RoundRecord
from consortium.removal.subtract import subtract_rounds
from consortium.round.history import PublicHistory
from consortium.round.pipeline import rule_from_config
from consortium.round.records import Layout, ProtocolError, get_vector, vector_hash
from consortium.rundir import load_run_config
from consortium.store import BlobNotFound, BlobStore, IntegrityError

RECORD = "removal.json"
FORMATS = (1, 2)  # 1: recover was FedEraser's calibration (no longer audited); 2: FedRecover's schedule


def is_removal(run_dir: Path) -> bool:
    return (run_dir / RECORD).is_file()


def _load(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    try:
        cfg = load_run_config(run_dir / "config.toml")
    except ConfigError as e:
        raise AuditInputError(str(e)) from None
    try:
        record = json.loads((run_dir / RECORD).read_text())
        rem = record["removal"]
        _ = (rem["participants"], rem["method"], rem["from_round"], rem["global_adapter"], record["rounds"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise AuditInputError(f"{run_dir / RECORD}: malformed removal record: {e!r}") from None
    if not record["rounds"]:
        raise AuditInputError(f"{run_dir / RECORD}: no replayed rounds")
    fmt = record.get("format")
    if fmt not in FORMATS:
        raise AuditInputError(f"{run_dir / RECORD}: format {fmt!r}, this version reads {FORMATS}")
    if fmt == 1 and rem["method"] == "recover":
        raise AuditInputError(
            f"{run_dir / RECORD}: format 1 recover (FedEraser's calibration) is no longer audited; "
            "redo the removal with this version (FedRecover's schedule)"
        )
    if fmt == 2 and rem["method"] == "recover":
        rem.setdefault("warmup_rounds", 0)  # recorded since the warm-up and the estimate were added
        rem.setdefault("estimate", "recorded")
        ints = [rem.get(k) for k in ("exact_rounds", "correct_every", "warmup_rounds")]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in ints):
            raise AuditInputError(
                f"{run_dir / RECORD}: recover without integer exact_rounds, correct_every, warmup_rounds"
            )
        if not isinstance(rem["estimate"], str):
            raise AuditInputError(f"{run_dir / RECORD}: recover's estimate {rem['estimate']!r} is not a name")
    return cfg, record


def audit_removal(run_dir: Path) -> AuditReport:
    """Audit a directory written by `consortium remove`."""
    cfg, record = _load(run_dir)
    out = AuditReport()
    store = BlobStore(run_dir / "store")
    rem = record["removal"]
    removed = set(rem["participants"])
    kept = [RoundRecord.of(r) for r in record.get("kept_rounds", [])]
    originals = [RoundRecord.of(r) for r in record.get("original_rounds", [])]
    rounds = record["rounds"]
    try:
        layout = layout_of(store, rounds[0]["global_in"])
        if rem["method"] == "subtract":
            _check_subtract(store, layout, originals, rounds, removed, cfg.server_lr, out)
        else:
            public = PublicHistory(store, layout, rule_from_config(cfg))
            _check_kept(public, kept, out)
            kinds = _expected_kinds(record, originals, out)
            curv = Curvature() if rem.get("estimate") == "lbfgs" else None
            _check_replayed(public, originals, rounds, removed, kinds, out, curv)
    except (BlobNotFound, IntegrityError, ProtocolError) as e:
        out.problems.append(f"store: {e}")
        return out
    final = rounds[-1]["global_out"]
    if rem["global_adapter"] != final:
        out.problems.append(
            f"removal: records global {rem['global_adapter']}, its last round ends at {final}"
        )
    check_exported_adapter(run_dir, store, final, out)
    _check_source(record, kept + originals, out)
    return out


def _check_kept(public: PublicHistory, kept: list[RoundRecord], out: AuditReport) -> None:
    for rec in kept:
        cand = public.candidate(
            rec.global_in, list(rec.commitments), rec.seed, root=rec.root, evidence=rec.evidence
        )
        if vector_hash(cand.vector, public.layout) != rec.global_out:
            out.problems.append(
                f"kept round {rec.round}: the candidate does not recompute to {rec.global_out}"
            )
        public.moved(rec.global_in, rec.global_out)
        out.count("kept rounds recomputed")


def _check_replayed(
    public: PublicHistory,
    originals: list[RoundRecord],
    rounds: list[dict[str, Any]],
    removed: set[str],
    kinds: list[set[str]] | None,
    out: AuditReport,
    curv: Curvature | None = None,
) -> None:
    """Every replayed round's candidate recomputed from its commitments, as the pipeline computes it;
    its kind one of `kinds` (None: a format-1 exact record, which has none); with `curv` (recover's
    "lbfgs" estimate), every estimated update recomputed from the exact rounds before it."""
    previous = originals[0].global_in if originals else rounds[0]["global_in"]
    by_round = {o.round: o for o in originals}
    for i, d in enumerate(rounds):
        rec = RoundRecord.of(d)
        r = rec.round
        if rec.global_in != previous:
            out.problems.append(
                f"round {r}: starts from {rec.global_in}, the previous round ended at {previous}"
            )
        if rec.seed != round_seed(rec.global_in, r):
            out.problems.append(f"round {r}: seed {rec.seed} is not the ledger's seed of its input model")
        if removed & set(rec.proposers):
            out.problems.append(
                f"round {r}: holds an update of removed {sorted(removed & set(rec.proposers))}"
            )
        orig = by_round.get(r)
        if orig is not None:
            expected = sorted(set(orig.proposers) - removed)
            if sorted(rec.proposers) != expected:
                out.problems.append(f"round {r}: proposers {sorted(rec.proposers)}, expected {expected}")
        if kinds is not None:
            estimated = _check_kind(
                d.get("kind"), kinds[i] if i < len(kinds) else set(), rec, orig, out, curv is not None
            )
            if curv is not None and orig is not None:
                if estimated:
                    _check_estimates(public, curv, rec, orig, out)
                elif d.get("kind") == "exact":
                    observe_exact(curv, public.store, public.layout, rec.global_in, rec.commitments, orig)
        cand = public.candidate(
            rec.global_in, list(rec.commitments), rec.seed, root=rec.root, evidence=rec.evidence
        )
        found = vector_hash(cand.vector, public.layout)
        if found != rec.global_out:
            out.problems.append(
                f"round {r}: candidate recomputes to {found}, the record says {rec.global_out}"
            )
        if sorted(cand.flagged) != sorted(rec.flagged):
            out.problems.append(
                f"round {r}: flags recompute to {cand.flagged}, the record says {list(rec.flagged)}"
            )
        public.moved(rec.global_in, rec.global_out)
        previous = rec.global_out
        out.count("replayed candidates recomputed")


def _expected_kinds(
    record: dict[str, Any], originals: list[RoundRecord], out: AuditReport
) -> list[set[str]] | None:
    """The kinds each replayed round may have: recover, its schedule; exact, exact or reused (checked
    against the start model in `_check_kind`); a format-1 exact record has no kinds."""
    rem, rounds = record["removal"], record["rounds"]
    if record["format"] == 1:
        return None
    if len(rounds) != len(originals):
        out.problems.append(f"removal: {len(rounds)} replayed rounds for {len(originals)} original ones")
    if rem["method"] == "exact":
        return [{"exact", "reused"}] * len(rounds)
    plan = Plan(**{k: rem[k] for k in PLAN_KEYS})
    problem = schedule_problem(len(rounds), *plan.args())
    if problem is not None:
        out.problems.append(f"removal: schedule {plan.describe()}: {problem}")
        return [set(KINDS)] * len(rounds)
    kinds = schedule(len(rounds), plan.exact_rounds, plan.correct_every, plan.warmup_rounds)
    return [{kind} for kind in kinds]


def _check_kind(
    kind: Any,
    allowed: set[str],
    rec: RoundRecord,
    orig: RoundRecord | None,
    out: AuditReport,
    lbfgs: bool = False,
) -> bool:
    """The round's recorded kind is one the method's schedule allows; a reused round starts from the
    recorded model; a reused or estimated round's updates are the participants' original ones (with
    `lbfgs`, an estimated round's only in example count and evidence: `_check_estimates` recomputes
    them). True for an estimated round whose updates are left to `_check_estimates`."""
    r = rec.round
    if kind not in allowed:
        out.problems.append(f"round {r}: kind {kind!r}, the schedule says {' or '.join(sorted(allowed))}")
    out.count("round kinds checked")
    if kind not in ("reused", "estimated"):
        return False
    if orig is None:
        out.problems.append(f"round {r}: {kind} but no original round {r} to take updates from")
        return False
    recomputed = lbfgs and kind == "estimated"
    if kind == "reused" and rec.global_in != orig.global_in:
        out.problems.append(f"round {r}: reused, but it starts from {rec.global_in}, not the recorded model")
    mine = {c.participant: c for c in orig.commitments}
    for c in rec.commitments:
        o = mine.get(c.participant)
        if o is None:
            out.problems.append(f"round {r}: {kind}, but {c.participant} has no original update")
        elif (c.n_examples != o.n_examples) or (not recomputed and c.blob != o.blob):
            out.problems.append(
                f"round {r}: {c.participant}'s {kind} update {c.blob} ({c.n_examples} examples) is not its "
                f"original {o.blob} ({o.n_examples} examples)"
            )
        elif rec.evidence.get(c.participant) != orig.evidence.get(c.participant):
            out.problems.append(f"round {r}: {c.participant}'s {kind} update has other probe evidence")
        if not recomputed:
            out.count(f"{kind} updates matched to their originals")
    return recomputed


def _check_estimates(
    public: PublicHistory, curv: Curvature, rec: RoundRecord, orig: RoundRecord, out: AuditReport
) -> None:
    """Each update of an "lbfgs"-estimated round is the estimate from the participant's original
    update of the round and its pairs of the exact rounds before it, bit for bit."""
    store, layout = public.store, public.layout
    v = model_change(store, layout, rec.global_in, orig)
    theirs = {c.participant: c.blob for c in orig.commitments}
    for c in rec.commitments:
        if c.participant not in theirs:
            continue  # named by `_check_kind`
        want = curv.estimate(c.participant, get_vector(store, theirs[c.participant], layout), v)
        found = vector_hash(want, layout)
        if found != c.blob:
            out.problems.append(
                f"round {rec.round}: {c.participant}'s estimated update {c.blob} is not the L-BFGS estimate "
                f"from its original update and earlier exact rounds ({found})"
            )
        out.count("estimated updates recomputed")


def _check_subtract(
    store: BlobStore,
    layout: Layout,
    originals: list[RoundRecord],
    rounds: list[dict[str, Any]],
    removed: set[str],
    server_lr: float,
    out: AuditReport,
) -> None:
    if len(originals) != len(rounds):
        out.problems.append(f"subtract: {len(rounds)} new rounds for {len(originals)} original ones")
        return
    vecs = subtract_rounds(store, layout, rounds[0]["global_in"], originals, sorted(removed), server_lr)
    for d, vec in zip(rounds, vecs, strict=True):
        found = vector_hash(vec, layout)
        if found != d["global_out"]:
            out.problems.append(
                f"round {d['round']}: subtraction recomputes to {found}, the record says {d['global_out']}"
            )
        out.count("subtracted rounds recomputed")


def _check_source(record: dict[str, Any], copies: list[RoundRecord], out: AuditReport) -> None:
    """The copied round records against the original run's own, when it is still there."""
    path = Path(record.get("source", {}).get("run_dir", ""))
    report = path / "report.json"
    if not report.is_file():
        return
    try:
        detail = json.loads(report.read_text()).get("rounds_detail", [])
        theirs = {int(d["round"]): RoundRecord.of(d) for d in detail}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        out.problems.append(f"source: {report} is not readable")
        return
    for rec in copies:
        if theirs.get(rec.round) != rec:
            out.problems.append(f"source: round {rec.round}'s record differs from {report}")
    out.count("source rounds compared", len(copies))
