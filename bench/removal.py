"""Contribution removal: how close each method gets to retraining without the removed participants.

Two scenarios per seed, each a full simulated central run (the code of `consortium run`):
- backdoor: 30% of the participants plant a backdoor under plain FedAvg; all of them are removed;
- leave: one honest organisation (org0, the only holder of its domain) leaves.
Each run is then removed from by `exact`, `recover` and `subtract` (`consortium.removal.remove`, the
code of `consortium remove`) and every result audited. The reference (`retrain`) is the model trained
from scratch without the removed participants over the same shards and seeds: `exact` with nothing
reused (every replayed round retrained); `exact` must equal it bit for bit. `recover` runs FedRecover's
schedule (first round reused, middle rounds estimated from the recorded updates, the last K exact:
`--exact-rounds K`, default max(1, floor(0.3 x rounds)); `--correct-every T` for periodic exact rounds);
the summary prints its schedule. Per method: clean accuracy,
backdoor ASR, relative distance to the reference adapter
(|v - v_ref| / |v_ref - v_0|), cost in local training steps and wall time as fractions of the
reference's, and a membership-style check for the leaver: mean loss on its training examples vs
held-out examples of its domain (test set), before and after.

    python bench/removal.py --seeds 0 1 2     # tiny-warm
    python bench/removal.py --seeds 0 --rounds 6 --exact-rounds 2 --correct-every 2
    # another recover schedule on the runs and references an earlier invocation left in --work:
    python bench/removal.py --seeds 0 --rounds 6 --methods recover --reuse --exact-rounds 1 \
        --correct-every 2 --out bench/results/removal_other_schedule

Wall times are measured within one process; other jobs share the cores, so only ratios are reported.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from consortium.config import RunConfig, _merge, config_digest, preset_dict
from consortium.data import encode_example
from consortium.local.participant import heldout_loss_fn
from consortium.removal import audit_removal, remove
from consortium.removal.schedule import PLAN_KEYS
from consortium.round.records import get_vector
from consortium.rundir import load_run_config
from consortium.sim import Simulation
from consortium.store import BlobStore

OUT = Path(__file__).parent / "results" / "removal"
METHODS = ("exact", "recover", "subtract")  # besides "retrain": exact with nothing reused, the reference
# the robustness bench's CPU setting (bench/robustness.py SETTINGS["smoke"]): tiny-warm learns under it
BASE: dict[str, Any] = {
    "rounds": 3,
    "protocol": "central",
    "aggregator": "fedavg",
    "model": {"name": "tiny-warm"},
    "lora": {
        "r": 8,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    "train": {"local_steps": 4, "lr": 1e-2},
    "data": {"domains": ["arithmetic", "units", "dates", "strings", "policy"], "n_train": 40, "n_test": 10},
    "eval": {"isolated_baseline": False},
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "backdoor": {"participants": 10, "attacks": [{"kind": "backdoor", "fraction": 0.3}]},
    "leave": {"participants": 5, "attacks": []},  # one domain per organisation: org0's is its own
}


# the SmolLM2 test bed (the demo preset, central, plain FedAvg): what the outcomes issue's runs would use
TESTBED: dict[str, Any] = {
    "protocol": "central",
    "aggregator": "fedavg",
    "eval": {"isolated_baseline": False},
}


def _override(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """`--set a.b=value` (value read as TOML, else a string) over the case's config."""
    for item in sets:
        key, _, raw = item.partition("=")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        *path, last = key.split(".")
        node: dict[str, Any] = {}
        cur = node
        for part in path:
            cur = cur.setdefault(part, {})
        cur[last] = value
        data = _merge(data, node)
    return data


def config(
    scenario: str, seed: int, rounds: int, preset: str = "smoke", sets: list[str] | None = None
) -> RunConfig:
    base = _merge(preset_dict("smoke"), BASE) if preset == "smoke" else _merge(preset_dict(preset), TESTBED)
    data = _merge(base, SCENARIOS[scenario])
    data = _merge(data, {"name": f"removal-{scenario}", "seed": seed, "rounds": rounds})
    return RunConfig.model_validate(_override(data, sets or []))


def _membership(sim: Simulation, who: str, vec: torch.Tensor) -> dict[str, float]:
    """Mean loss on the leaver's training examples and on held-out examples of its domains."""
    p = next(p for p in sim.participants if p.name == who)
    c = sim.cfg
    held = [
        encode_example(sim.tokenizer, e, c.train.max_len, c.data.system_prompt)
        for e in sim.test
        if e.domain in p.domains
    ]
    pad, bs = sim.tokenizer.pad_token_id, c.eval.batch_size
    train = heldout_loss_fn(sim.model, sim.spec, p.encoded, pad, bs)(vec)
    test = heldout_loss_fn(sim.model, sim.spec, held, pad, bs)(vec)
    return {"train_loss": train, "heldout_loss": test, "gap": test - train}


def _evaluate(sim: Simulation, vec: torch.Tensor, leaver: str | None, progress: Progress) -> dict[str, Any]:
    acc = sim.evaluate(vec, "eval", progress)
    out: dict[str, Any] = {"clean": acc["mean"], "accuracy": acc}
    if sim.backdoors:
        out["asr"] = sim.backdoor_metrics(vec, "eval", progress)[0]["asr"]
    if leaver is not None:
        p = next(p for p in sim.participants if p.name == leaver)
        out["leaver_domain_accuracy"] = statistics.mean(acc[d] for d in p.domains)
        out["membership"] = _membership(sim, leaver, vec)
    return out


def _left(folder: Path, marker: str, cfg: RunConfig) -> Path | None:
    """The newest run directory in `folder` holding `marker` (a finished run or removal) of the same
    config digest as `cfg`; None when there is none."""
    digest = config_digest(cfg)
    done = sorted(p.parent for p in folder.glob(f"*/{marker}")) if folder.is_dir() else []
    same = [p for p in done if config_digest(load_run_config(p / "config.toml")) == digest]
    return same[-1] if same else None


def _source(removal_dir: Path) -> tuple[str, list[str]]:
    """(original global adapter, removed participants) of a removal's run directory."""
    rec = json.loads((removal_dir / "removal.json").read_text())
    return rec["source"]["global_adapter"], sorted(rec["removal"]["participants"])


def run_case(
    scenario: str,
    seed: int,
    rounds: int,
    work: Path,
    preset: str = "smoke",
    sets: list[str] | None = None,
    exact_rounds: int | None = None,
    correct_every: int | None = None,
    methods: tuple[str, ...] = METHODS,
    reuse: bool = False,
    warmup_rounds: int | None = None,
    estimate: str | None = None,
) -> dict[str, Any]:
    """One scenario at one seed; `exact_rounds` / `correct_every` / `warmup_rounds` / `estimate`:
    recover's schedule and estimate (None: default);
    `methods`: which besides the reference; `reuse`: take the original run and the reference an earlier
    invocation left in `work` (same config) instead of training them again, e.g. to try another
    recover schedule on the same runs."""
    cfg = config(scenario, seed, rounds, preset, sets)
    quiet = Console(file=io.StringIO())
    sim = Simulation(cfg, console=quiet)
    t0 = time.perf_counter()
    run_dir = _left(work / "runs", "report.json", sim.cfg) if reuse else None
    original_seconds = None
    if run_dir is None:
        run_dir = sim.run(work / "runs", plots=False)
        original_seconds = time.perf_counter() - t0
    report = json.loads((run_dir / "report.json").read_text())
    removed = sorted(report["attackers"]) if scenario == "backdoor" else ["org0"]
    leaver = "org0" if scenario == "leave" else None
    store = BlobStore(run_dir / "store")
    with Progress(console=quiet) as progress:
        final = get_vector(store, report["global_adapter"], sim.layout)
        rows: dict[str, Any] = {"original": _evaluate(sim, final, leaver, progress)}
        vecs: dict[str, torch.Tensor] = {}
        earlier_reference: Path | None = None
        for method in ("retrain", *methods):
            t1 = time.perf_counter()
            how = "exact" if method == "retrain" else method
            schedule = {
                "exact_rounds": exact_rounds,
                "correct_every": correct_every,
                "warmup_rounds": warmup_rounds,
                "estimate": estimate,
            }
            earlier = _left(work / method, "removal.json", sim.cfg) if reuse and method == "retrain" else None
            if earlier is not None and _source(earlier) != (report["global_adapter"], removed):
                earlier = None  # the reference of another original run or removal: train it again
            path = earlier or remove(
                run_dir,
                removed,
                how,
                work / method,
                console=quiet,
                sim=sim,
                reuse=method != "retrain",
                **(schedule if method == "recover" else {}),
            )
            if method == "retrain":
                earlier_reference = earlier
            rec = json.loads((path / "removal.json").read_text())
            # a reference from an earlier invocation: its replay's own time, measured then
            wall = rec["cost"]["seconds"] if earlier else time.perf_counter() - t1
            vecs[method] = get_vector(BlobStore(path / "store"), rec["removal"]["global_adapter"], sim.layout)
            audit = audit_removal(path)
            rows[method] = _evaluate(sim, vecs[method], leaver, progress) | {
                "global_adapter": rec["removal"]["global_adapter"],
                "local_steps": rec["cost"]["local_steps"],
                "wall_seconds": wall,
                "audit_ok": audit.ok,
                "kinds": [r.get("kind", "subtracted") for r in rec["rounds"]],
            }
            if method == "recover":
                for key in PLAN_KEYS:
                    rows[method][key] = rec["removal"][key]
    ref, v0 = vecs["retrain"], sim.initial
    scale = float((ref - v0).double().norm())
    for method in ("original", "retrain", *methods):
        vec = final if method == "original" else vecs[method]
        rows[method]["distance_to_reference"] = float((vec - ref).double().norm()) / scale
        if method != "original":
            rows[method]["steps_fraction"] = rows[method]["local_steps"] / rows["retrain"]["local_steps"]
            if earlier_reference is None:  # else the two times ran under other loads: not a ratio
                rows[method]["wall_fraction"] = rows[method]["wall_seconds"] / rows["retrain"]["wall_seconds"]
    if "exact" in rows:
        same = rows["exact"]["global_adapter"] == rows["retrain"]["global_adapter"]
        rows["exact"]["equals_reference"] = same
    return {
        "scenario": scenario,
        "seed": seed,
        "removed": removed,
        "original_run_seconds": original_seconds,
        "config": {
            "model": cfg.model.name,
            "participants": cfg.participants,
            "rounds": cfg.rounds,
            "local_steps": cfg.train.local_steps,
            "batch_size": cfg.train.batch_size,
            "n_train": cfg.data.n_train,
            "n_test": cfg.data.n_test,
        },
        "rows": rows,
    }


def _fmt(values: list[float], pct: bool = True) -> str:
    k = 100.0 if pct else 1.0
    if len(values) == 1:
        return f"{k * values[0]:.1f}" if pct else f"{values[0]:.3f}"
    m, s = statistics.mean(values), statistics.stdev(values)
    return f"{k * m:.1f} ± {k * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def _shown(out: Path) -> str:
    """The results folder as the docs name it: relative to the repository when inside it."""
    try:
        return str(out.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(out)


def _schedules(rs: list[dict[str, Any]]) -> list[str]:
    """recover's schedule per distinct (K, T, kinds) among the seeds: which rounds it estimated."""
    seen: dict[str, list[int]] = {}
    for r in (r for r in rs if "recover" in r["rows"]):
        row = r["rows"]["recover"]
        if "kinds" not in row:  # a results file from before the schedule (FedEraser's calibration)
            seen.setdefault("calibration (removal format 1)", []).append(r["seed"])
            continue
        every = row["correct_every"] or "off"
        kinds = ", ".join(row["kinds"])
        key = f"K = {row['exact_rounds']} exact, correction every {every}"
        if row.get("warmup_rounds"):
            key += f", warm-up {row['warmup_rounds']}"
        if row.get("estimate", "recorded") != "recorded":
            key += f", estimate {row['estimate']}"
        key += f"; replayed rounds {kinds}"
        seen.setdefault(key, []).append(r["seed"])
    return [f"recover schedule (seeds {seeds}): {key}" for key, seeds in seen.items()]


def summary(results: list[dict[str, Any]], command: str, out: Path = OUT) -> str:
    seeds = sorted({r["seed"] for r in results})
    models = ", ".join(sorted({r["config"].get("model", "tiny-warm") for r in results}))
    lines = [
        "# Contribution removal (bench/removal.py)",
        "",
        f"Command: `{command}`; results: `{_shown(out)}/removal-seeds*.json`; seeds {seeds}; "
        f"model {models}; mean ± sd over seeds. Wall fractions are ratios within one process "
        "(other jobs shared the 2 cores). The reference (`retrain`) retrains every round from scratch "
        "without the removed participants over the same shards and seeds (`exact` with nothing reused).",
        "",
    ]
    for scenario in SCENARIOS:
        rs = [r for r in results if r["scenario"] == scenario]
        if not rs:
            continue
        cfg = rs[0]["config"]
        lines += [
            f"## {scenario}: removed {', '.join(rs[0]['removed'])} (seed {rs[0]['seed']}); "
            f"{cfg['participants']} participants, {cfg['rounds']} rounds x {cfg['local_steps']} local steps, "
            f"{len(rs)} seed(s)",
            "",
        ]
        head = "| method | clean acc % | ASR % | leaver's domain acc % | loss gap (held-out − train) "
        head += "| distance to ref | local steps / ref | wall / ref | audit |"
        lines += [head, "|" + "---|" * 9]
        for m in ("original", "retrain", *METHODS):
            rows = [r["rows"][m] for r in rs if m in r["rows"]]
            if not rows:
                continue

            def col(key: str, pct: bool = True, rows: list[dict[str, Any]] = rows) -> str:
                vals = [row[key] for row in rows if key in row]
                return _fmt(vals, pct) if vals else "–"

            gap = [row["membership"]["gap"] for row in rows if "membership" in row]
            audit = "–" if m == "original" else ("pass" if all(r["audit_ok"] for r in rows) else "FAIL")
            run = [r["seed"] for r in rs if m in r["rows"]]  # `--methods` runs only some
            label = m if len(run) == len(rs) else f"{m} (seeds {', '.join(map(str, run))})"
            lines.append(
                f"| {label} | {col('clean')} | {col('asr')} | {col('leaver_domain_accuracy')} | "
                f"{_fmt(gap, False) if gap else '–'} | {col('distance_to_reference', False)} | "
                f"{col('steps_fraction', False)} | {col('wall_fraction', False)} | {audit} |"
            )
        lines += ["", *_schedules(rs), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/removal_bench"))
    ap.add_argument("--out", type=Path, default=None, help="default: results/removal[_PRESET]")
    ap.add_argument(
        "--preset",
        default="smoke",
        choices=["smoke", "demo", "bench"],
        help="bench: the outcomes issue's SmolLM2 test bed (demo: the demo's training)",
    )
    ap.add_argument("--set", action="append", default=[], help="config override a.b=value (repeatable)")
    ap.add_argument(
        "--exact-rounds", type=int, default=None, help="recover: K (default max(1, 0.3 x rounds))"
    )
    ap.add_argument("--correct-every", type=int, default=None, help="recover: every T-th middle round exact")
    ap.add_argument(
        "--warmup-rounds", type=int, default=None, help="recover: the W rounds after the first exact"
    )
    ap.add_argument(
        "--estimate", default=None, choices=["recorded", "lbfgs"], help="recover: how middle rounds estimate"
    )
    ap.add_argument("--summary-only", action="store_true", help="rewrite removal.md from the results files")
    ap.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="besides the reference"
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="take the original run and the reference left in --work (same config) instead of training "
        "them again: another recover schedule on the same runs (write to another --out)",
    )
    args = ap.parse_args(argv)
    if args.out is None:  # each preset's results apart: the summary merges every file in the folder
        args.out = OUT if args.preset == "smoke" else OUT.with_name(f"removal_{args.preset}")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "-".join(map(str, args.seeds))
    if list(args.scenarios) != list(SCENARIOS):
        tag += "-" + "-".join(args.scenarios)
    command = "python bench/removal.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results: list[dict[str, Any]] = []
    for seed in [] if args.summary_only else args.seeds:
        for scenario in args.scenarios:
            print(f"{scenario} seed {seed} ...", flush=True)
            work = args.work / f"{scenario}-{seed}"
            results.append(
                run_case(
                    scenario,
                    seed,
                    args.rounds,
                    work,
                    args.preset,
                    args.set,
                    args.exact_rounds,
                    args.correct_every,
                    tuple(args.methods),
                    args.reuse,
                    args.warmup_rounds,
                    args.estimate,
                )
            )
            (args.out / f"removal-seeds{tag}.json").write_text(json.dumps(results, indent=2) + "\n")
    # one summary over every results file in the folder (seeds may run as separate processes)
    merged = [r for f in sorted(args.out.glob("removal-seeds*.json")) for r in json.loads(f.read_text())]
    merged.sort(key=lambda r: (r["scenario"], r["seed"]))
    preset = "" if args.preset == "smoke" else f" --preset {args.preset}"
    # the rounds the results ran, not this invocation's default (--summary-only runs nothing)
    ran = sorted({r["config"]["rounds"] for r in merged}) or [args.rounds]
    rounds = ",".join(map(str, ran))
    cmd = f"python bench/removal.py --seeds S --rounds {rounds}{preset} (one process per seed S and scenario)"
    (args.out / "removal.md").write_text(summary(merged, cmd, args.out))
    print(summary(merged, command, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
