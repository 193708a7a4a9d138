"""`consortium remove`: a new run directory whose global adapter excludes some participants.

The original run directory is only read. Everything is checked first (`read_source`), then built in a
hidden temporary directory beside the destination and renamed into place at the end, so bad input or
a crash leaves nothing behind. The new directory is self-contained for `consortium audit`: the run's
config.toml (byte for byte), `removal.json` (who, from which round, which method, the resulting
global hash, the kept, original and new round records, the cost), a `store/` with every blob those
records name and the probe artifact the config names (the pipeline reads it from the store by
hash), the exported `adapter/` and `run.log`. `exact` of a chain run instead goes through the contract on
the run's own chain and writes a chain run directory (`removal.on_chain`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from consortium.audit.rounds import layout_of
from consortium.backend import BackendError
from consortium.config import config_digest
from consortium.data import DataError
from consortium.model import ModelLoadError, export_peft, set_flat
from consortium.probe import ProbeError
from consortium.removal.replay import ReplayResult, SourceMismatch, replay
from consortium.removal.schedule import Plan, default_exact_rounds, schedule_problem
from consortium.removal.source import RemovalInputError, SourceRun, read_source
from consortium.removal.subtract import check_linear, subtract_rounds
from consortium.report import write_report
from consortium.round.records import Layout, get_vector, put_vector
from consortium.rundir import atomic_write
from consortium.sim import Simulation
from consortium.store import BlobStore

RECORD = "removal.json"
FORMAT = 2  # 2: recover on FedRecover's schedule, each replayed round's kind recorded


def _copy_blobs(src: BlobStore, dst: BlobStore, digests: Sequence[str]) -> None:
    for d in dict.fromkeys(digests):
        dst.put(src.get(d))  # get verifies the hash


def _load_simulation(src: SourceRun, console: Any) -> Any:
    """The run's simulation (data, model, participants) rebuilt from its config; its layout checked."""
    try:
        sim = Simulation(src.cfg, console)
    except (DataError, ModelLoadError, ProbeError, BackendError) as e:
        raise RemovalInputError(f"{src.path / 'config.toml'}: {e}") from None
    if [tuple(x) for x in sim.layout] != [tuple(x) for x in layout_of(src.store, src.start)]:
        raise RemovalInputError(f"{src.path}: the store's adapters do not have the config's layout")
    names = [p.name for p in sim.participants]
    if names != list(src.report.get("participant_examples") or {}):
        raise RemovalInputError(f"{src.path}: the config's participants are not the report's")
    return sim


def _subtract(src: SourceRun, store: BlobStore, layout: Layout) -> ReplayResult:
    t0 = time.perf_counter()
    vecs = subtract_rounds(src.store, layout, src.start, src.replaced, src.removed, src.cfg.server_lr)
    out = ReplayResult()
    global_in = src.start
    for rec, vec in zip(src.replaced, vecs, strict=True):
        global_out = put_vector(store, vec, layout)
        out.rounds.append({"round": rec.round, "global_in": global_in, "global_out": global_out})
        global_in = global_out
    out.seconds = time.perf_counter() - t0
    return out


def _final_name(out_root: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = out_root / f"{name}-{stamp}", 1
    while path.exists():
        path, n = out_root / f"{name}-{stamp}-{n}", n + 1
    return path


def remove(
    run_dir: Path,
    participants: Sequence[str],
    method: str,
    out_root: Path,
    from_round: int | None = None,
    exact_rounds: int | None = None,
    correct_every: int | None = None,
    console: Any = None,
    sim: Any = None,
    reuse: bool = True,
    warmup_rounds: int | None = None,
    estimate: str | None = None,
) -> Path:
    """Remove `participants` from the run in `run_dir` by `method`; returns the new run directory.
    `sim`: the run's `Simulation`, already loaded (a benchmark's), instead of rebuilding it;
    recover: `exact_rounds` (None: max(1, floor(0.3 x replayed rounds))), `correct_every` and
    `warmup_rounds` (None or 0: off) set its schedule and `estimate` (None: "recorded", or "lbfgs") its
    estimated updates (`consortium.removal.schedule`); exact: `reuse=False` retrains the first replayed
    round too (`replay`)."""
    options = (exact_rounds, correct_every, warmup_rounds, estimate)
    if method != "recover" and any(o is not None for o in options):
        raise RemovalInputError(
            "--exact-rounds, --correct-every, --warmup-rounds and --estimate: for --method recover, "
            f"not {method}"
        )
    src = read_source(run_dir, participants, from_round, method)
    plan = Plan()
    if method == "recover":
        k = default_exact_rounds(len(src.replaced)) if exact_rounds is None else exact_rounds
        plan = Plan(k, correct_every or 0, warmup_rounds or 0, estimate or "recorded")
        problem = schedule_problem(len(src.replaced), *plan.args())
        if problem is not None:
            raise RemovalInputError(problem)
    if method == "subtract":
        check_linear(src.cfg.lora.variant)
    on_chain = src.cfg.protocol == "chain" and method == "exact"
    if on_chain:
        from consortium.removal.on_chain import check_chain_source  # import time: web3, the EVM

        check_chain_source(src)
    console = console or Console()
    sim = sim or _load_simulation(src, console)
    created = not out_root.exists()
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_root, prefix=".remove-"))
    try:  # everything is written into tmp, renamed into place only once complete
        if on_chain:
            _write_on_chain(src, sim, tmp)
        else:
            _write_replay(src, sim, tmp, method, plan, reuse)
        dest = _final_name(out_root, f"{src.cfg.name}-remove-{method}")
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:  # bad input found late leaves nothing behind either
            with contextlib.suppress(OSError):
                out_root.rmdir()
        raise
    return dest


def _write_replay(src: SourceRun, sim: Any, tmp: Path, method: str, plan: Plan, reuse: bool) -> None:
    """exact, recover or subtract of a central run (subtract of a chain run too): a removal directory."""
    store = BlobStore(tmp / "store")
    kept = [b for r in src.kept for b in r.blobs()] + [src.start]
    originals = [b for r in src.replaced for b in r.blobs()] if method != "exact" else []
    probe = [src.cfg.probe.artifact] if src.cfg.probe.artifact else []  # the pipeline reads it by hash
    _copy_blobs(src.store, store, kept + originals + probe)
    if method == "subtract":
        result = _subtract(src, store, sim.layout)
    else:
        try:
            result = replay(
                sim,
                src,
                store,
                method,
                plan.exact_rounds,
                plan.correct_every,
                reuse=reuse,
                warmup_rounds=plan.warmup_rounds,
                estimate=plan.estimate,
            )
        except SourceMismatch as e:
            raise RemovalInputError(f"{src.path}: {e}") from None
    set_flat(sim.model, sim.spec, get_vector(store, result.final, sim.layout))
    export_peft(sim.model, tmp / "adapter")
    atomic_write(tmp / "config.toml", (src.path / "config.toml").read_bytes())
    record = _record(src, method, result, plan)
    atomic_write(tmp / RECORD, json.dumps(record, indent=2) + "\n")
    line = f"removed {', '.join(src.removed)} from round {src.from_round} by {method}: global {result.final}"
    atomic_write(tmp / "run.log", f"{time.strftime('%H:%M:%S')} {line}\n")


def _write_on_chain(src: SourceRun, sim: Any, tmp: Path) -> None:
    """exact of a chain run: the contract's removal on the run's chain (`removal.on_chain`), written as a
    chain run directory."""
    from consortium.removal.on_chain import remove_on_chain  # import time: web3, the EVM

    atomic_write(tmp / "config.toml", (src.path / "config.toml").read_bytes())
    record = remove_on_chain(sim, src, tmp)
    set_flat(sim.model, sim.spec, get_vector(BlobStore(tmp / "store"), record["global_adapter"], sim.layout))
    export_peft(sim.model, tmp / "adapter")
    write_report(json.loads((tmp / "report.json").read_text()), tmp, plots_too=False)
    line = (
        f"removed {', '.join(src.removed)} from round {src.from_round} by exact on chain (removal "
        f"{record['removal_id']}): global {record['global_adapter']}"
    )
    with (tmp / "run.log").open("a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def _record(src: SourceRun, method: str, result: ReplayResult, plan: Plan) -> dict[str, Any]:
    """What `removal.json` holds: the removal, its source, the rounds it rests on and what it cost."""
    cfg = src.cfg
    full = len(src.others) * cfg.train.local_steps * len(src.rounds)  # retraining from scratch without them
    removal: dict[str, Any] = {
        "participants": list(src.removed),
        "from_round": src.from_round,
        "method": method,
        "global_adapter": result.final,
    }
    if method == "recover":
        removal |= asdict(plan)
    return {
        "format": FORMAT,
        "removal": removal,
        "source": {
            "run_dir": str(src.path.resolve()),
            "global_adapter": src.report.get("global_adapter"),
            "config_digest": config_digest(cfg),
            "rounds": len(src.rounds),
        },
        "kept_rounds": [r.to_json() for r in src.kept],
        "original_rounds": [r.to_json() for r in src.replaced],
        "rounds": result.rounds,
        "cost": {
            "local_steps": result.local_steps,
            "full_retrain_local_steps": full,
            "fraction_of_full_retrain": result.local_steps / full if full else 0.0,
            "seconds": result.seconds,
        },
    }
