"""Evaluation throughput: exact match by one teacher-forced pass vs by greedy generation, same examples.

Both judge the same held-out examples with the same model and batch size; the table gives examples/s,
peak memory and how many verdicts the two methods agree on (they must all agree: a teacher-forced
verdict is exactly "greedy decoding would produce the reference and stop").

    python bench/eval_throughput.py                       # tiny-warm (some answers right, some wrong)
    python bench/eval_throughput.py --model smollm2 --n 40
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
from consortium.model import load_base

SYSTEM = "You are a concise assistant."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-warm")
    ap.add_argument("--n", type=int, default=100, help="held-out examples (spread over the domains)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    ap.add_argument("--out", type=Path, help="append the table as Markdown to this file")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = pick_dtype(args.dtype, device)
    model, tok = load_base(args.model, dtype=dtype)
    model.to(device)
    per_domain = max(1, args.n // len(DOMAINS))
    examples = build_corpus(DOMAINS, 4 * per_domain, per_domain, seed=7).test
    verdicts: dict[str, list[bool]] = {}
    rates: dict[str, list[float]] = {"teacher_forced": [], "greedy": []}
    peaks = dict.fromkeys(rates, 0)
    for rep in range(args.repeats + 1):  # round-robin; the first round warms up
        for method in rates:
            with PeakMemory(device) as mem:
                t0 = time.perf_counter()
                got = exact_match_verdicts(
                    model, tok, examples, method, args.batch_size, args.max_new_tokens, SYSTEM
                )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
            peaks[method] = max(peaks[method], mem.peak)
            verdicts[method] = got
            if rep:
                rates[method].append(len(examples) / seconds)
    agree = sum(a == b for a, b in zip(verdicts["teacher_forced"], verdicts["greedy"], strict=True))
    correct = sum(verdicts["greedy"])
    rows = []
    for method, label in (
        ("greedy", "greedy generation (HF generate)"),
        ("teacher_forced", "teacher-forced pass"),
    ):
        xs = sorted(rates[method])
        rows.append(Row(label, statistics.median(xs), peaks[method], f"best {xs[-1]:.1f}"))
    title = (
        f"exact-match evaluation, {args.model} ({dtype}), {len(examples)} examples, batch {args.batch_size}, "
        f"max_new_tokens {args.max_new_tokens} - {describe_device(device)}"
    )
    render(title, "examples/s", PeakMemory(device).label, rows, rows[0].rate or 0.0, args.out)
    line = f"verdicts agree on {agree}/{len(examples)} examples ({correct} correct by greedy decoding)"
    print(line)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(line + "\n\n")
    if agree != len(examples):
        raise SystemExit("teacher-forced and greedy verdicts disagree: see consortium/evaluate.py")


if __name__ == "__main__":
    main()
