"""Aggregation at scale: seconds for one aggregation per rule over n clients x d parameters.

Random float32 updates (a tenth of the clients are large-norm outliers) on `--device`; FLTrust gets a root
update near the benign mean, FoolsGold uses the current updates as history. Each rule is warmed up on a
small slice first, then one full `aggregate()` call is timed (with torch.cuda.synchronize on CUDA); the
time includes input validation. A cell is skipped when its input would exceed `--max-gb`.

    python bench/aggregation_scale.py                                   # every cell that fits
    python bench/aggregation_scale.py --n 10 100 --d 1000000            # narrow the grid
    python bench/aggregation_scale.py --rules median krum --device cpu

Needs torch, scikit-learn (FLAME) and rich; not pydantic or the rest of consortium's dependencies.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a bare checkout, without installing the package

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from consortium.defense import AGGREGATORS, DefenseParams, aggregate  # noqa: E402

RULES = list(AGGREGATORS)  # registration order: fedavg first, then the robust rules


def human(d: int) -> str:
    return f"{d / 1e6:g}M" if d >= 1_000_000 else f"{d / 1e3:g}k" if d >= 1000 else str(d)


def default_max_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return 0.7 * torch.cuda.get_device_properties(device).total_memory / 2**30
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 0.4 * ram / 2**30


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(n: int, d: int, device: torch.device, seed: int = 0):
    """[n, d] float32 updates with max(1, n // 10) large-norm outliers, sample counts, a root update."""
    g = torch.Generator(device=device).manual_seed(seed)
    updates = torch.randn(n, d, generator=g, device=device).mul_(1e-3)
    bad = max(1, n // 10)
    updates[:bad].mul_(20.0).add_(5e-3)
    weights = torch.randint(10, 1000, (n,), generator=torch.Generator().manual_seed(seed)).to(torch.float64)
    root = updates[bad:].mean(0) + 1e-3 * torch.randn(d, generator=g, device=device)
    return updates, weights, root


def run_rule(name: str, updates, weights, root, params: DefenseParams) -> None:
    aggregate(name, updates, weights, params=params, root_update=root if name == "fltrust" else None, seed=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="numbers of clients")
    ap.add_argument("--d", type=int, nargs="+", default=[1_000_000, 11_000_000], help="update lengths")
    ap.add_argument("--rules", nargs="+", default=RULES, choices=sorted(AGGREGATORS), metavar="RULE")
    ap.add_argument("--max-gb", type=float, default=None, help="skip cells whose input exceeds this (GiB)")
    ap.add_argument(
        "--max-s",
        type=float,
        default=None,
        help="skip a rule on larger cells once it took longer than this on a smaller one",
    )
    ap.add_argument("--chunk-elems", type=int, default=DefenseParams().chunk_elems)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    max_gb = args.max_gb if args.max_gb is not None else default_max_gb(device)
    out = args.out or ROOT / "bench" / "results" / f"aggregation_scale_{device.type}.md"
    params = DefenseParams(chunk_elems=args.chunk_elems)
    console = Console()
    console.print(f"[bold]{device_name(device)}[/]: input limit {max_gb:.1f} GiB, torch {torch.__version__}")

    cells = sorted(((n, d) for n in args.n for d in args.d), key=lambda c: (c[0] * c[1], c))
    times: dict[tuple[str, int, int], str] = {}
    notes: list[str] = []
    slow: dict[str, tuple[float, int, int]] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("aggregating", total=len(cells) * len(args.rules))
        for n, d in cells:
            gb = n * d * 4 / 2**30
            if gb > max_gb:
                notes.append(f"n={n}, d={human(d)}: skipped, input {gb:.1f} GiB > --max-gb {max_gb:.1f}")
                progress.console.print(f"[yellow]skip[/] {notes[-1]}")
                for rule in args.rules:
                    times[rule, n, d] = "mem"
                progress.advance(task, len(args.rules))
                continue
            updates, weights, root = make_inputs(n, d, device)
            small = (updates[: min(n, 16), :10_000], weights[: min(n, 16)], root[:10_000])
            for rule in args.rules:
                progress.update(task, description=f"{rule} n={n} d={human(d)}")
                if rule in slow:
                    s, pn, pd = slow[rule]
                    times[rule, n, d] = "slow"
                    notes.append(f"{rule} n={n}, d={human(d)}: skipped, {s:.0f} s at n={pn}, d={human(pd)}")
                    progress.advance(task)
                    continue
                run_rule(rule, *small, params)  # warm-up: kernels, cuBLAS handles, sklearn import
                sync(device)
                t0 = time.perf_counter()
                run_rule(rule, updates, weights, root, params)
                sync(device)
                s = time.perf_counter() - t0
                times[rule, n, d] = f"{s:.3f}" if s < 10 else f"{s:.1f}"
                progress.console.print(f"{rule:>12} n={n:<5} d={human(d):<4} {s:8.3f} s")
                if args.max_s is not None and s > args.max_s:
                    slow[rule] = (s, n, d)
                progress.advance(task)
            del updates, weights, root, small
            if device.type == "cuda":
                torch.cuda.empty_cache()

    cols = sorted({(n, d) for n, d in cells}, key=lambda c: (c[1], c[0]))
    lines = [
        "# Aggregation at scale",
        "",
        "Seconds for one `aggregate()` call (validation included), float32 updates,",
        f"on {device_name(device)}; torch {torch.__version__}, chunk_elems {args.chunk_elems},",
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "`mem`: input over the memory limit; `slow`: skipped after a smaller cell exceeded --max-s.",
        "",
        "| rule | " + " | ".join(f"n={n} x d={human(d)}" for n, d in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    lines += [f"| {r} | " + " | ".join(times.get((r, n, d), "") for n, d in cols) + " |" for r in args.rules]
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    table = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    console.print(f"written to {out}")


if __name__ == "__main__":
    main()
