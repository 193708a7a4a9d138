"""Aggregation at scale: seconds per rule over n clients x d parameters, as multiples of one pass.

Random float32 updates (a tenth of the clients are large-norm outliers, seed 0) on `--device`; FLTrust gets
a root update near the benign mean, FoolsGold uses the current updates as history. Per cell it times, in
the same run: one pass over the updates (`x.sum(0)`, best of 3), the float32 Gram product (`x @ x.T`,
the floor of the distance rules), the screen before aggregation (`consortium.defense.screen`, against an
unrelated last step), FLAME's distance step (the Gram matrix the rules use, turned into cosines), then one
full `aggregate()` per rule (validation included) after a warm-up on a small slice. The Gram rules and the
distance step run at each `--versions` (aggregation version 1: float64 Gram matrix and float64 weighted
sums; 2: the Gram matrix from float32 products summed in float64; 3: that Gram matrix and float32 weighted
sums and norms), a row "<rule> vN" for each version that changes the rule (`definition`). Ratios are
taken within one run, so they hold when other jobs share the cores; seconds do not. The load average
before and after each cell is written with it.

Peak memory: the growth of the process's peak resident set (Linux VmHWM, reset through
/proc/self/clear_refs before each timed call) over the resident set before it, so the input itself is not
counted. Torch's CPU allocations are plain malloc, so they show there (tracemalloc would miss them); on
CUDA it is torch.cuda.max_memory_allocated over the allocation before the call.

    python bench/aggregation_scale.py                                   # every cell under --max-gb
    python bench/aggregation_scale.py --n 100 --d 2000000               # one cell
    python bench/aggregation_scale.py --rules median krum --device cpu

Writes bench/results/aggregation_scale_<device>.md and .json. Needs torch, scikit-learn (FLAME) and rich.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a bare checkout, without installing the package

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from consortium.defense import AGGREGATORS, DefenseParams, aggregate  # noqa: E402
from consortium.defense.kernels import cosine_from_gram, gram  # noqa: E402
from consortium.defense.screen import screen  # noqa: E402

RULES = list(AGGREGATORS)  # registration order: fedavg first, then the robust rules
GRAM_RULES = ("krum", "multi_krum", "bulyan", "flame", "foolsgold")  # one Gram matrix each
STEP = "flame distance step"
# the targets (issue 24), at n = 100 and d = 2M, 11M
PASS_TARGETS = {
    "fedavg": 3.0,
    "norm_bound": 3.0,
    "rlr": 3.0,
    "median": 25.0,
    "trimmed_mean": 25.0,
    "bulyan": 25.0,
}
GRAM_TARGETS = {"krum": 1.5, "multi_krum": 1.5, "foolsgold": 1.5, "flame distance step": 1.5}
SCREEN_TARGET = 2.0


def human(d: int) -> str:
    return f"{d / 1e6:g}M" if d >= 1_000_000 else f"{d / 1e3:g}k" if d >= 1000 else str(d)


def default_max_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return 0.7 * torch.cuda.get_device_properties(device).total_memory / 2**30
    return 4.5  # the input; peaks stay under ~8 GiB on a machine others share


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} torch threads"


class Meter:
    """Seconds and peak-memory growth (MiB) of one call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.hwm = device.type == "cpu" and os.path.exists("/proc/self/clear_refs")

    def _status(self, key: str) -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(key))  # kB

    def __call__(self, fn: Callable[[], object]) -> tuple[float, float | None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        elif self.hwm:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current resident set
            before = self._status("VmRSS:")
        t0 = time.perf_counter()
        result = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        del result
        if self.device.type == "cuda":
            return seconds, (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        if self.hwm:
            return seconds, (self._status("VmHWM:") - before) / 1024
        return seconds, None


def make_inputs(n: int, d: int, device: torch.device, seed: int = 0):
    """[n, d] float32 updates with max(1, n // 10) large-norm outliers, sample counts, a root update."""
    g = torch.Generator(device=device).manual_seed(seed)
    updates = torch.randn(n, d, generator=g, device=device).mul_(1e-3)
    bad = max(1, n // 10)
    updates[:bad].mul_(20.0).add_(5e-3)
    weights = torch.randint(10, 1000, (n,), generator=torch.Generator().manual_seed(seed)).to(torch.float64)
    root = updates[bad:].mean(0) + 1e-3 * torch.randn(d, generator=g, device=device)
    last = 1e-3 * torch.randn(d, generator=g, device=device)
    return updates, weights, root, last


SAME_AT_ALL = ("median", "trimmed_mean")
SUMS_ONLY = ("fedavg", "norm_bound", "rlr", "fltrust")  # version 3 changes them, 2 does not
GRAM_ONLY = ("krum", "bulyan", STEP)  # version 2 changes them, 3 adds nothing


def definition(name: str, version: int) -> int:
    """The lowest aggregation version that computes `name` as `version` does."""
    if name in SAME_AT_ALL:
        return 1
    if name in SUMS_ONLY:
        return 3 if version >= 3 else 1
    if name in GRAM_ONLY:
        return min(version, 2)
    return version


def versions_of(name: str, versions: list[int]) -> list[int]:
    """The listed versions that compute `name` differently from each other (the first of each)."""
    seen: dict[int, int] = {}
    for v in versions:
        seen.setdefault(definition(name, v), v)
    return list(seen.values())


def row_name(name: str, version: int) -> str:
    """A rule's (or the distance step's) row at an aggregation version >= 2 that changes it is named
    "<name> vN"; a rule every version computes alike keeps its name."""
    return f"{name} v{version}" if definition(name, version) >= 2 else name


def base_name(name: str) -> str:
    head, _, tail = name.rpartition(" v")
    return head if head and tail.isdigit() else name


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_rule(name: str, updates, weights, root, params: DefenseParams):
    return aggregate(
        name, updates, weights, params=params, root_update=root if name == "fltrust" else None, seed=1
    )


def best_of(meter: Meter, fn: Callable[[], object], reps: int) -> tuple[float, float | None]:
    runs = [meter(fn) for _ in range(reps)]
    return min(s for s, _ in runs), max((m for _, m in runs if m is not None), default=None)


def measure_cell(n: int, d: int, args, device: torch.device, meter: Meter, console: Console) -> dict:
    updates, weights, root, last = make_inputs(n, d, device)
    small = (updates[: min(n, 16), :10_000], weights[: min(n, 16)], root[:10_000])
    rows: dict[str, dict] = {}

    def record(name: str, seconds: float, mib: float | None) -> None:
        rows[name] = {"seconds": seconds, "peak_mib": mib}
        mem = "" if mib is None else f"  peak +{mib:,.0f} MiB"
        console.print(f"{name:>20} n={n:<5} d={human(d):<4} {seconds:8.3f} s{mem}")

    record("one pass", *best_of(meter, lambda: updates.sum(0), 3))
    if args.gram:
        record("Gram product", *best_of(meter, lambda: updates @ updates.T, max(2, args.reps)))
    screen(updates[:, :1000], last[:1000], 0.05, 0.99)
    reps = args.reps
    record("screen", *best_of(meter, lambda: screen(updates, last, 0.05, 0.99), reps))
    for v in versions_of(STEP, args.versions):
        if "flame" in args.rules:
            step = lambda v=v: cosine_from_gram(gram(updates, args.chunk_elems, version=v))  # noqa: E731
            record(row_name(STEP, v), *best_of(meter, step, reps))
    for rule in args.rules:
        for v in versions_of(rule, args.versions):
            params = DefenseParams(chunk_elems=args.chunk_elems, aggregation_version=v)
            run_rule(rule, *small, params)  # warm-up: kernels, sklearn import
            call = lambda rule=rule, params=params: run_rule(rule, updates, weights, root, params)  # noqa: E731
            record(row_name(rule, v), *best_of(meter, call, reps))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    one = rows["one pass"]["seconds"]
    gram_s = rows.get("Gram product", {}).get("seconds")
    for name, row in rows.items():
        row["x_one_pass"] = row["seconds"] / one
        if gram_s and (base_name(name) in (*GRAM_RULES, STEP) or name == "Gram product"):
            row["x_gram"] = row["seconds"] / gram_s
    return rows


def targets(cells: dict[tuple[int, int], dict]) -> list[str]:
    lines = []
    for (n, d), rows in sorted(cells.items()):
        if n != 100 or d not in (2_000_000, 11_000_000):
            continue
        checks = [
            (name, "x_one_pass", t) for name in rows for r, t in PASS_TARGETS.items() if base_name(name) == r
        ]
        checks += [
            (name, "x_gram", t) for name in rows for r, t in GRAM_TARGETS.items() if base_name(name) == r
        ]
        checks += [("screen", "x_one_pass", SCREEN_TARGET)]
        for name, key, limit in checks:
            if name in rows and key in rows[name]:
                got = rows[name][key]
                unit = "one pass" if key == "x_one_pass" else "the Gram product"
                verdict = "met" if got <= limit else "missed"
                lines.append(f"| {n} x {human(d)} | {name} | <= {limit:g}x {unit} | {got:.2f}x | {verdict} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="numbers of clients")
    ap.add_argument("--d", type=int, nargs="+", default=[1_000_000, 11_000_000], help="update lengths")
    ap.add_argument(
        "--cells", nargs="+", default=None, metavar="NxD", help="explicit cells, e.g. 100x2000000"
    )
    ap.add_argument("--rules", nargs="+", default=RULES, choices=sorted(AGGREGATORS), metavar="RULE")
    ap.add_argument("--max-gb", type=float, default=None, help="skip cells whose input exceeds this (GiB)")
    ap.add_argument("--no-gram", dest="gram", action="store_false", help="skip the float32 Gram product")
    ap.add_argument("--chunk-elems", type=int, default=DefenseParams().chunk_elems)
    ap.add_argument("--reps", type=int, default=1, help="time each rule this many times, keep the best")
    ap.add_argument(
        "--versions",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        choices=[1, 2, 3],
        help="aggregation versions (a rule runs at each that changes it)",
    )
    ap.add_argument("--out", type=Path, default=None, help="markdown file (a .json is written beside it)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    max_gb = args.max_gb if args.max_gb is not None else default_max_gb(device)
    out = args.out or ROOT / "bench" / "results" / f"aggregation_scale_{device.type}.md"
    console = Console()
    console.print(f"[bold]{device_name(device)}[/]: input limit {max_gb:.1f} GiB, torch {torch.__version__}")
    if args.cells:
        grid = [tuple(int(v) for v in c.lower().split("x")) for c in args.cells]
    else:
        grid = [(n, d) for n in args.n for d in args.d]
    meter = Meter(device)
    cells: dict[tuple[int, int], dict] = {}
    notes: list[str] = []

    def write() -> str:
        """The results so far, written after every cell (a long run stopped early keeps them)."""
        cols = sorted(cells, key=lambda c: (c[1], c[0]))
        head = "| | " + " | ".join(f"n={n} x d={human(d)}" for n, d in cols) + " |"
        sep = "|---|" + "---:|" * len(cols)
        gram_rows = [row_name(r, v) for r in (STEP, *GRAM_RULES) for v in versions_of(r, args.versions)]
        names = [
            "one pass",
            "Gram product",
            "screen",
            *(
                row_name(r, v)
                for r in args.rules
                if r not in GRAM_RULES
                for v in versions_of(r, args.versions)
            ),
            *gram_rows,
        ]

        def table(fmt: Callable[[dict], str]) -> list[str]:
            return [head, sep] + [
                f"| {name} | " + " | ".join(fmt(cells[c].get(name, {})) for c in cols) + " |"
                for name in names
                if any(name in cells[c] for c in cols)
            ]

        def cell_text(row: dict) -> str:
            if not row:
                return ""
            text = f"{row['seconds']:.3g} s, {row['x_one_pass']:.1f}x"
            return text + (f" ({row['x_gram']:.2f}x Gram)" if "x_gram" in row else "")

        def mem_text(row: dict) -> str:
            return "" if not row or row["peak_mib"] is None else f"{row['peak_mib']:,.0f}"

        command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        lines = [
            "# Aggregation at scale",
            "",
            f"`{command}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on {device_name(device)}; torch "
            f"{torch.__version__}, chunk_elems {args.chunk_elems}. Random float32 updates, seed 0, a",
            f"tenth of the clients large-norm outliers. Best of {args.reps} `aggregate()` call(s) per rule",
            "(validation included) and of the screen; one pass best of 3, the Gram product best of 2.",
            f'Aggregation version(s) {", ".join(map(str, args.versions))}: "vN" rows at version N (2: the',
            "Gram matrix from float32 products summed in float64; 3: that and float32 weighted sums and",
            "norms); unmarked rows at version 1 (float64), or the same at every version.",
            "**Ratios are within one run; the cores were shared with other jobs, so seconds vary from run",
            "to run.**",
            "",
            "## Seconds and multiples of one pass (`x.sum(0)`, best of 3); distance rules also vs `x @ x.T`",
            "",
            *table(cell_text),
            "",
            "## Peak memory growth during the call (MiB over the resident set before it, input excluded)",
            "",
            "Measured as Linux VmHWM (reset via /proc/self/clear_refs) minus VmRSS before the call.",
            "",
            *table(mem_text),
        ]
        met = targets(cells)
        if met:
            lines += [
                "",
                "## Targets of issue 24",
                "",
                "| cell | what | target | got | |",
                "|---|---|---|---:|---|",
                *met,
            ]
        if notes:
            lines += ["", *[f"- {note}" for note in notes]]
        text = "\n".join(lines) + "\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        payload = {
            "command": command,
            "device": device_name(device),
            "torch": torch.__version__,
            "chunk_elems": args.chunk_elems,
            "reps": args.reps,
            "aggregation_versions": args.versions,
            "seed": 0,
            "peak_memory": "VmHWM growth over VmRSS before the call, MiB"
            if device.type == "cpu"
            else "cuda max allocated",
            "cells": [{"n": n, "d": d, "rows": rows} for (n, d), rows in sorted(cells.items())],
            "notes": notes,
        }
        out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
        return text

    for n, d in sorted(grid, key=lambda c: (c[0] * c[1], c)):
        gb = n * d * 4 / 2**30
        if gb > max_gb:
            notes.append(
                f"n={n}, d={human(d)}: not run, its input alone is {gb:.1f} GiB > --max-gb {max_gb:.1f}"
            )
            console.print(f"[yellow]skip[/] {notes[-1]}")
            continue
        before = load()
        cells[n, d] = measure_cell(n, d, args, device, meter, console)
        notes.append(f"n={n}, d={human(d)}: {before} before, {load()} after ({datetime.now(UTC):%H:%M} UTC)")
        write()
    print(write())
    console.print(f"written to {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
