"""Where an aggregation's time goes: its parts, as multiples of one pass, on ONE thread in process CPU time.

`bench/aggregation_scale.py` times whole calls in wall-clock seconds on all cores; on a machine others share,
those ratios move by 2x between runs. CPU time of one thread is far steadier, so this script times the
parts behind issue 24's targets that way: the float64 conversion at several chunk sizes, the weighted sum,
the old separate validation pass, the Gram matrix (float64 with a fresh block per chunk as before, with
the reused block now, aggregation version 2's float32-product one, and the float32 product they are
compared to), the screen's bounding pass and the whole screen (with how many rows it computed exactly),
the rules fedavg, rlr, norm_bound at aggregation versions 1 and 3, and the Gram rules at each version
that changes them.

    python bench/aggregation_parts.py                    # n = 100, d = 2M
    python bench/aggregation_parts.py --n 100 --d 11000000 --only "one pass" screen Gram

Writes bench/results/aggregation_parts_cpu.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from consortium.defense import DefenseParams, aggregate  # noqa: E402
from consortium.defense import screen as screen_mod  # noqa: E402
from consortium.defense.chunks import col_chunks  # noqa: E402
from consortium.defense.finite import finite_rows  # noqa: E402
from consortium.defense.kernels import cosine_from_gram, gram, weighted_sum  # noqa: E402

F64 = torch.float64


def cpu_seconds(fn: Callable[[], object], reps: int) -> float:
    """Best process CPU time of `reps` calls."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def gram_fresh_blocks(x: torch.Tensor, chunk_elems: int) -> torch.Tensor:
    """The Gram matrix as the first pass computed it: a fresh float64 block per chunk."""
    g = torch.zeros(x.shape[0], x.shape[0], dtype=F64)
    for cols in col_chunks(x.shape[0], x.shape[1], chunk_elems):
        c = x[:, cols].to(F64)
        g += c @ c.T
        del c
    return (g + g.T) * 0.5


def convert_blocks(x: torch.Tensor, elems: int) -> None:
    for cols in col_chunks(x.shape[0], x.shape[1], elems):
        x[:, cols].to(F64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=2_000_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "aggregation_parts_cpu.md")
    ap.add_argument("--only", nargs="+", default=None, help="time only the parts whose name has one of these")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, d, reps = args.n, args.d, args.reps
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen).mul_(1e-3)
    x[: max(1, n // 10)].mul_(20.0).add_(5e-3)
    last = 1e-3 * torch.randn(d, generator=gen)
    weights = torch.randint(10, 1000, (n,), generator=gen).to(F64)
    coef = weights / weights.sum()
    chunk = 1 << 26
    versions = {v: DefenseParams(aggregation_version=v) for v in (1, 2, 3)}
    exact_rows: list[int] = []
    exact_norms_of = screen_mod.exact_norms_of

    def counting(xx: torch.Tensor, rows) -> dict:
        rows = list(rows)
        exact_rows.append(len(rows))
        return exact_norms_of(xx, rows)

    parts: list[tuple[str, Callable[[], object]]] = [
        ("one pass (x.sum(0))", lambda: x.sum(0)),
        *[
            (f"float64 conversion, chunks of 2^{e} elements", lambda e=e: convert_blocks(x, 1 << e))
            for e in (15, 17, 19)
        ],
        ("weighted sum (fedavg's kernel)", lambda: weighted_sum(x, coef, chunk)),
        ("separate validation pass (before the second pass)", lambda: finite_rows(x, chunk)),
        ("float32 Gram product x @ x.T", lambda: x @ x.T),
        ("float64 Gram, fresh block per chunk (before)", lambda: gram_fresh_blocks(x, chunk)),
        ("float64 Gram, one reused block (now)", lambda: gram(x, chunk)),
        ("Gram, aggregation version 2", lambda: gram(x, chunk, version=2)),
        ("FLAME's distance step, version 2", lambda: cosine_from_gram(gram(x, chunk, version=2))),
        ("screen: float32 bounding pass", lambda: screen_mod.bounds_float32(x, last.double())),
        ("screen: float64 bounding pass (other dtypes)", lambda: screen_mod.bounds_float64(x, last.double())),
        ("screen, whole", lambda: screen_mod.screen(x, last, 0.05, 0.99)),
        *[
            (f"{name}, version {v}", lambda name=name, v=v: aggregate(name, x, weights, params=versions[v]))
            for name in ("fedavg", "rlr", "norm_bound")
            for v in (1, 3)  # version 2 computes them as 1
        ],
        *[
            (f"{name}, version {v}", lambda name=name, v=v: aggregate(name, x, weights, params=versions[v]))
            for name in ("krum", "multi_krum", "foolsgold", "bulyan")
            for v in ((1, 2) if name in ("krum", "bulyan") else (1, 2, 3))  # 3 computes Krum, Bulyan as 2
        ],
    ]
    if args.only:
        parts = [(k, f) for k, f in parts if k.startswith("one pass") or any(o in k for o in args.only)]
    rows: dict[str, float] = {}
    for name, fn in parts:
        if name == "screen, whole":
            screen_mod.exact_norms_of = counting
        rows[name] = cpu_seconds(fn, reps)
        screen_mod.exact_norms_of = exact_norms_of
        print(
            f"{name:>52} {rows[name]:8.3f} s CPU  {rows[name] / rows['one pass (x.sum(0))']:6.2f}x",
            flush=True,
        )
    one = rows["one pass (x.sum(0))"]
    command = "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Aggregation parts, one thread, process CPU time",
        "",
        f"`{command}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, n = {n}, d = {d},",
        f"seed 0, best of {reps}. One torch thread, `time.process_time()`: steadier than wall-clock",
        "seconds on cores shared with other jobs (the machine was shared), though memory traffic still",
        "interferes.",
        f"The screen computed {sum(exact_rows) // reps} row norms exactly per call (calls: {exact_rows})."
        if "screen, whole" in rows
        else "The whole screen was not timed (--only).",
        "",
        "| part | CPU s | x one pass |",
        "|---|---:|---:|",
        *[f"| {name} | {s:.3f} | {s / one:.2f} |" for name, s in rows.items()],
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    payload = {
        "command": command,
        "n": n,
        "d": d,
        "seed": 0,
        "reps": reps,
        "threads": 1,
        "clock": "process CPU time",
        "screen_exact_rows": exact_rows,
        "cpu_seconds": rows,
        "x_one_pass": {k: v / one for k, v in rows.items()},
    }
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    print(text)


if __name__ == "__main__":
    main()
