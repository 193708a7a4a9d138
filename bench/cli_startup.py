"""How long `consortium --help` takes, and which heavy libraries it loads, for one or more checkouts.

Timings on a shared machine vary; the runs of the checkouts are interleaved so each repeat compares
them under the same load, and the figure to read is the ratio of the medians, not the seconds.

    python bench/cli_startup.py --root /work/main --root . --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "pydantic", "web3", "sklearn", "numpy", "starlette")
PROBE = (
    "import sys, consortium.cli; "
    f"print(len(sys.modules), ','.join(m for m in {HEAVY!r} if m in sys.modules) or '-')"
)


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root.resolve())}  # and cwd=root: -m and -c put the cwd first


def help_seconds(root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "consortium.cli", "--help"],
        env=_env(root),
        cwd=root,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def loaded(root: Path) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=_env(root), cwd=root, check=True, capture_output=True
    )
    n, libs = out.stdout.decode().split()
    return int(n), libs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, action="append", required=True, help="a checkout (repeatable)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("bench/results/cli_startup.md"))
    args = ap.parse_args()
    times: dict[Path, list[float]] = {r: [] for r in args.root}
    for _ in range(args.repeats):
        for r in args.root:  # interleaved: each repeat sees the same load on every checkout
            times[r].append(help_seconds(r))
    first = statistics.median(times[args.root[0]])
    rows = [
        "| checkout | median s | min s | ratio to first | modules loaded | heavy libraries loaded |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in args.root:
        n, libs = loaded(r)
        med = statistics.median(times[r])
        rows.append(f"| `{r}` | {med:.2f} | {min(times[r]):.2f} | {med / first:.2f} | {n} | {libs} |")
    cmd = "python bench/cli_startup.py " + " ".join(f"--root {r}" for r in args.root)
    text = (
        f"# `consortium --help` start-up\n\nCommand: `{cmd} --repeats {args.repeats}` "
        f"({args.repeats} interleaved repeats, `python -m consortium.cli --help`; a shared 2-core machine, "
        "other jobs running: read the ratio, not the seconds).\n\n" + "\n".join(rows) + "\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
