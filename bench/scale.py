"""Simulation at scale: round wall time and peak memory for N participants, in process vs Ray.

Each cell (N participants x backend) runs in a fresh process, so its peak memory is its own: the tiny
model, protocol "fedavg", 1 local step of batch 4 per participant (IID shards of 4 examples each), no
isolated baselines. The round time is the report's `federated_train` over the rounds (local training of
every participant, blob writes, aggregation), evaluation excluded. Under Ray the cluster is started and
the actors have loaded the model before the clock starts; that start-up is reported on its own.

Memory (resident set sizes, MiB): the driver's peak; the actors' peaks summed; the Ray system
processes (GCS, raylet, agents) sampled after the rounds. RSS sums count shared library pages once per
process, so the totals overstate what the machines need.

    python bench/scale.py                          # 10, 100, 500 participants, both backends
    python bench/scale.py --n 10 100 --backends ray
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a bare checkout, without installing the package

MIB = 2**20


def overrides(n: int, backend: str, rounds: int, steps: int) -> list[str]:
    return [
        "name=scale",
        "protocol=central",
        f"participants={n}",
        f"rounds={rounds}",
        f"train.local_steps={steps}",
        "train.batch_size=4",
        "data.partition=iid",
        f"data.n_train={max(8, n)}",  # 4 domains x n examples: 4 per participant
        "data.n_test=4",
        "eval.isolated_baseline=false",
        f"backend={backend}",
        "ray.threads=1",  # one torch thread per actor, one actor per core
    ]


def cell(n: int, backend: str, rounds: int, steps: int) -> dict[str, Any]:
    """One measurement in this process (called through `--cell` in a fresh interpreter)."""
    import tempfile

    from rich.console import Console

    from consortium.config import load_config
    from consortium.sim import Simulation

    cfg = load_config(preset="smoke", overrides=overrides(n, backend, rounds, steps))
    t0 = time.perf_counter()
    if backend == "ray":
        import ray

        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    sim = Simulation(cfg, Console(quiet=True))
    if backend == "ray":
        sim.backend.worker_info()  # waits until every actor has loaded the model
    startup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = sim.run(Path(tmp), plots=False)
        report = json.loads((path / "report.json").read_text())
    out = {
        "participants": n,
        "backend": backend,
        "rounds": rounds,
        "local_steps": steps,
        "round_seconds": report["timings"]["federated_train"] / rounds,
        "startup_seconds": startup,
        "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB,
        "workers_peak_mib": 0.0,
        "ray_system_mib": 0.0,
        "backend_info": report["backend"],
        "global_adapter": report["global_adapter"],
    }
    if backend == "ray":
        import psutil
        import ray

        actors = {w["pid"] for w in sim.backend.final_info}
        out["workers_peak_mib"] = sum(w["peak_rss"] for w in sim.backend.final_info) / MIB
        rss = 0
        for p in psutil.Process().children(recursive=True):
            if p.pid not in actors:
                with contextlib.suppress(psutil.Error):  # a process that exited in between
                    rss += p.memory_info().rss
        out["ray_system_mib"] = rss / MIB
        ray.shutdown()
    out["total_mib"] = out["driver_peak_mib"] + out["workers_peak_mib"] + out["ray_system_mib"]
    return out


def run_cell(
    n: int, backend: str, rounds: int, steps: int, threads: int, timeout: float
) -> dict[str, Any] | None:
    args = [sys.executable, __file__, "--cell", str(n), backend, "--rounds", str(rounds)]
    args += ["--steps", str(steps)]
    load = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # the driver's torch threads
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"cell {n} {backend} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["load_before"] = load
    return row


def machine() -> str:
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(title="round wall time and peak memory (tiny model)")
    cols = ("participants", "backend", "round s", "start-up s", "driver MiB", "actors MiB", "Ray sys MiB")
    for col in (*cols, "total MiB"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            str(r["participants"]),
            r["backend"],
            f"{r['round_seconds']:.2f}",
            f"{r['startup_seconds']:.1f}",
            f"{r['driver_peak_mib']:.0f}",
            f"{r['workers_peak_mib']:.0f}",
            f"{r['ray_system_mib']:.0f}",
            f"{r['total_mib']:.0f}",
        )
    return t


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for backend in sorted({r["backend"] for r in rows}):
        mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["participants"])
        ns = [r["participants"] for r in mine]
        ax_t.plot(ns, [r["round_seconds"] for r in mine], "o-", label=backend)
        ax_m.plot(ns, [r["total_mib"] for r in mine], "o-", label=backend)
    for ax, label in ((ax_t, "round wall time (s)"), (ax_m, "peak memory, all processes (MiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("participants")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax_t.set_yscale("log")
    fig.suptitle(f"Consortium simulation at scale ({machine()})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, skipped: list[str]) -> str:
    lines = [
        "# Simulation at scale: in process vs Ray",
        "",
        f"Machine: {machine()} (shared with other jobs: the 1-min load average before each cell is listed). "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: `python bench/scale.py "
        f"--n {' '.join(map(str, args.n))} --rounds {args.rounds} --steps {args.steps} "
        f"--threads {args.threads}`.",
        "",
        f"Tiny model, protocol fedavg, {args.rounds} rounds, {args.steps} local step(s) of batch 4 per "
        f"participant, IID shards of 4 examples. In process: one process, {args.threads} torch thread(s); "
        "Ray: a local cluster, one actor per core, one torch thread each. Round time = local training of "
        "every participant + blob writes + aggregation (evaluation excluded); start-up = (Ray cluster "
        "start +) model loading, before the clock.",
        "",
        "| participants | backend | round (s) | start-up (s) | driver peak (MiB) | actors peak, Σ (MiB) "
        "| Ray system (MiB) | total (MiB) | load before |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['participants']} | {r['backend']} | {r['round_seconds']:.2f} | {r['startup_seconds']:.1f} "
            f"| {r['driver_peak_mib']:.0f} | {r['workers_peak_mib']:.0f} | {r['ray_system_mib']:.0f} "
            f"| {r['total_mib']:.0f} | {r['load_before']:.1f} |"
        )
    if skipped:
        lines += ["", f"Not run (over the {args.timeout:.0f} s per-cell limit): {', '.join(skipped)}."]
    lines += ["", "![scaling curve](scale_cpu.png)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 500])
    ap.add_argument("--backends", nargs="+", default=["inprocess", "ray"], choices=["inprocess", "ray"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process driver")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per cell before it is skipped")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_cpu")
    ap.add_argument("--cell", nargs=2, metavar=("N", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        print(json.dumps(cell(int(args.cell[0]), args.cell[1], args.rounds, args.steps)))
        return
    from rich.console import Console

    console = Console()
    rows, skipped = [], []
    for n in args.n:
        for backend in args.backends:
            console.print(f"{n} participants, {backend} ...")
            row = run_cell(n, backend, args.rounds, args.steps, args.threads, args.timeout)
            if row is None:
                skipped.append(f"{n} {backend}")
                continue
            rows.append(row)
            console.print(table(rows[-1:]))
    console.print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, args, skipped))
    plot(rows, args.out.with_suffix(".png"))
    console.print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
