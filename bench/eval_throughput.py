"""Evaluation throughput: exact match by one teacher-forced pass vs by greedy generation, same examples.

Both judge the same held-out examples with the same model and batch size; the table gives examples/s,
peak memory and how many verdicts the two methods agree on (they must all agree: a teacher-forced
verdict is exactly "greedy decoding would produce the reference and stop").

    python bench/eval_throughput.py                       # tiny-warm (some answers right, some wrong)
    python bench/eval_throughput.py --model smollm2 --n 40
    python bench/eval_throughput.py --model smollm2 --n 100 --batch-size 50 --top 6   # + prefix cache

With `--top k` a third row evaluates a model with adapters on the top k layers through the frozen-prefix
cache (`train.prefix_cache`): its first (warm-up) pass fills the cache, later passes (every round's
evaluation in a run) run only the top k layers. Its verdicts must agree with the other two as well.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedkit import DOMAINS, PeakMemory, Row, describe_device, pick_dtype, render

from consortium.data import build_corpus
from consortium.evaluate import exact_match_verdicts
from consortium.model import LoraSpec, attach, load_base
from consortium.model.prefix import enable_prefix_cache

SYSTEM = "You are a concise assistant."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-warm")
    ap.add_argument("--n", type=int, default=100, help="held-out examples (spread over the domains)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    ap.add_argument("--top", type=int, default=0, help="add the prefix-cache row (adapters on the top k)")
    ap.add_argument("--out", type=Path, help="append the table as Markdown to this file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = pick_dtype(args.dtype, device)
    model, tok = load_base(args.model, dtype=dtype)
    model.to(device)
    per_domain = max(1, args.n // len(DOMAINS))
    examples = build_corpus(DOMAINS, 4 * per_domain, per_domain, seed=7).test
    verdicts: dict[str, list[bool]] = {}
    rates: dict[str, list[float]] = {"teacher_forced": [], "greedy": []}  # the first is the baseline
    models = {"teacher_forced": model, "greedy": model}
    first: dict[str, float] = {}
    if args.top:
        cached_base, _ = load_base(args.model, dtype=dtype)
        cached = attach(cached_base.to(device), LoraSpec(layers=f"top:{args.top}"))  # B = 0: the base
        enable_prefix_cache(cached)
        rates["cached"], models["cached"] = [], cached
    peaks = dict.fromkeys(rates, 0)
    for rep in range(args.repeats + 1):  # round-robin; the first round warms up (and fills the cache)
        for key in rates:
            method = "greedy" if key == "greedy" else "teacher_forced"
            with PeakMemory(device) as mem:
                t0 = time.perf_counter()
                got = exact_match_verdicts(
                    models[key], tok, examples, method, args.batch_size, args.max_new_tokens, SYSTEM
                )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
            peaks[key] = max(peaks[key], mem.peak)
            verdicts[key] = got
            if rep:
                rates[key].append(len(examples) / seconds)
            else:
                first[key] = seconds
    agree = sum(all(v[i] == verdicts["greedy"][i] for v in verdicts.values()) for i in range(len(examples)))
    correct = sum(verdicts["greedy"])
    rows = []
    labels = {
        "greedy": "greedy generation (HF generate)",
        "teacher_forced": "teacher-forced pass",
        "cached": f"teacher-forced pass, adapters on the top {args.top} layers + prefix cache",
    }
    for key in rates:
        xs = sorted(rates[key])
        note = f"best {xs[-1]:.1f}; first (warm-up) pass {first[key]:.1f} s"
        rows.append(Row(labels[key], statistics.median(xs), peaks[key], note))
    title = (
        f"exact-match evaluation, {args.model} ({dtype}), {len(examples)} examples, batch {args.batch_size}, "
        f"max_new_tokens {args.max_new_tokens} - {describe_device(device)}"
    )
    title += " - ratios vs the teacher-forced pass"
    render(title, "examples/s", PeakMemory(device).label, rows, rows[0].rate or 0.0, args.out)
    line = (
        f"all {len(rates)} methods' verdicts agree on {agree}/{len(examples)} examples "
        f"({correct} correct by greedy decoding)"
    )
    print(line)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(line + "\n\n")
    if agree != len(examples):
        raise SystemExit("the methods' verdicts disagree: see consortium/evaluate.py")


if __name__ == "__main__":
    main()
