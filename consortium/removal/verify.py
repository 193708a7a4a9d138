"""`consortium audit` of a removal run directory: the result follows from the public records.

Checked from the directory alone (config.toml, removal.json, store/, adapter/): the kept rounds'
candidates recompute to their recorded global models; then, per method,
- exact / recover: every replayed round chains from the previous one, has the seed the ledger derives
  from its input model, has no update of a removed participant and one of every other, and its
  candidate recomputed by the run's pipeline (`PublicHistory`, as every participant computes it) is
  the recorded global model with the recorded flags; for recover, each calibrated update has the
  length of that participant's original update of the round (FedEraser's rule);
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
from consortium.removal.source import RoundRecord
from consortium.removal.subtract import subtract_rounds
from consortium.round.history import PublicHistory
from consortium.round.pipeline import rule_from_config
from consortium.round.records import Layout, ProtocolError, get_vector, vector_hash
from consortium.rundir import load_run_config
from consortium.store import BlobNotFound, BlobStore, IntegrityError

RECORD = "removal.json"
NORM_RTOL = 1e-5  # float32 rounding of a rescaled vector's length


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
            _check_replayed(public, originals, rounds, removed, rem["method"] == "recover", out)
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
    recover: bool,
    out: AuditReport,
) -> None:
    """Every replayed round's candidate recomputed from its commitments, as the pipeline computes it."""
    previous = originals[0].global_in if originals else rounds[0]["global_in"]
    by_round = {o.round: o for o in originals}
    for d in rounds:
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
            if recover:
                _check_lengths(public, orig, rec, out)
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


def _check_lengths(public: PublicHistory, orig: RoundRecord, rec: RoundRecord, out: AuditReport) -> None:
    """FedEraser: a calibrated update keeps the length of the participant's original update."""
    old = {c.participant: c.blob for c in orig.commitments}
    for c in rec.commitments:
        if c.participant not in old:
            continue
        want = float(get_vector(public.store, old[c.participant], public.layout).double().norm())
        got = float(get_vector(public.store, c.blob, public.layout).double().norm())
        if abs(got - want) > NORM_RTOL * max(want, 1e-30) and got != 0.0:
            out.problems.append(
                f"round {rec.round}: {c.participant}'s update has length {got}, its original {want}"
            )
        out.count("calibrated lengths checked")


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
