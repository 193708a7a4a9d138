"""Fill a probe's sample cache for chosen seeds, so that two processes can simulate one probe's seeds
side by side (`consortium probe train` simulates its seeds one after another in one process).

Each seed is one cache file (`consortium.probe.samples`); a seed already cached is skipped. Afterwards
`python bench/probe_quick_fit.py` (or `consortium probe train`) with the same `--set`s and `--cache`
fits the probe from the cache without simulating again.

    python bench/probe_collect.py --preset bench --cache DIR --seeds 0,1 \
        --set probe.level=step --set probe.train_rounds=3 --set train.threads=1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from consortium.cli_probe import probe_config
from consortium.probe.dataset import load_clients
from consortium.probe.samples import collect_cached


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--set", action="append", default=[], help="dotted override, as `probe train --set`")
    ap.add_argument("--cache", type=Path, required=True, help="the probe's sample cache")
    ap.add_argument("--seeds", required=True, help="comma-separated seeds to simulate, e.g. 0,1")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    cfg = probe_config(None, args.preset, args.set)
    args.cache.mkdir(parents=True, exist_ok=True)
    clients = load_clients(cfg)
    for seed in seeds:
        t0 = time.perf_counter()
        samples = collect_cached(clients, [seed], cfg.probe.level, args.cache)
        print(
            f"seed {seed}: {len(samples)} {cfg.probe.level} samples, {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
