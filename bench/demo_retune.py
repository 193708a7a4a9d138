"""Accuracy against wall time, round by round, for runs of the demo made side by side (issue 21's re-tune).

The runs themselves are ordinary `consortium run` commands started at the same moment on the same
machine (so they share its load alike); this script reads each run directory's `report.json` (accuracy
per round, local-training seconds) and `run.log` (when each round ended) and prints one table, so the
configurations can be compared at equal wall time:

    python bench/demo_retune.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --out bench/results/demo_retune_cpu.md
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

ROUND_LINE = re.compile(r"^(\d\d:\d\d:\d\d) (?:run started|round (\d+))")


def round_ends(log: Path) -> dict[int, float]:
    """Seconds from 'run started' to the end of each round (0 = the start), from run.log's clock."""
    out: dict[int, float] = {}
    start: datetime | None = None
    for line in log.read_text().splitlines():
        m = ROUND_LINE.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%H:%M:%S")
        if start is None:
            start = t
        if t < start:  # past midnight
            t += timedelta(days=1)
        out[int(m.group(2) or 0)] = (t - start).total_seconds()
    return out


def rows(label: str, run: Path) -> list[str]:
    """One table row per finished round of `run`."""
    report = json.loads((run / "report.json").read_text())
    ends = round_ends(run / "run.log")
    cfg = (run / "config.toml").read_text()
    steps = int(re.search(r"^local_steps = (\d+)", cfg, re.M).group(1))
    out = []
    for k, detail in enumerate(report["rounds_detail"], start=1):
        acc = detail.get("accuracy") or {}
        domains = " | ".join(f"{acc[d]:.2f}" for d in sorted(acc) if d != "mean")
        out.append(
            f"| {label} | {k} | {k * steps} | {ends.get(k, float('nan')):.0f} | {domains} | "
            f"**{acc.get('mean', float('nan')):.2f}** | {detail.get('outcome', '-')} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    domains = None
    body: list[str] = []
    for spec in args.runs:
        label, _, path = spec.partition("=")
        run = Path(path)
        if not (run / "report.json").is_file() or not (run / "run.log").is_file():
            raise SystemExit(f"{run}: not a run directory (no report.json or run.log)")
        report = json.loads((run / "report.json").read_text())
        domains = domains or [d for d in sorted(report["accuracy"]["base"]) if d != "mean"]
        body += rows(label, run)
    head = [
        "| run | round | rounds x local steps | wall s at round end | "
        + " | ".join(domains or [])
        + " | mean | outcome |",
        "|---" * (6 + len(domains or [])) + "|",
    ]
    text = "\n".join(head + body) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
