"""Does torch.compile (inductor) repay its compile time on CPU within a demo-length run?

SmolLM2-135M, the demo's LoRA on the top 6 layers, prefix cache, bf16 autocast: the first compiled call
(which compiles) is timed, then eager and compiled steps alternate; the break-even point is the compile
overhead divided by the per-step gain. Batches vary in length as in real runs (dynamic shapes).

    python bench/compile_cpu.py --steps 4 --threads 1 --out bench/results/compile_cpu.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedkit import corpus_examples, describe_device

from consortium.model import LoraSpec, attach, get_flat, load_base, set_flat
from consortium.model.prefix import enable_prefix_cache
from consortium.train import LocalTrainer, TrainParams

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base, tok = load_base("smollm2")
    spec = LoraSpec(variant="ffa", r=8, alpha=16.0, target_modules=MODULES, layers="top:6")
    model = attach(base, spec)
    enable_prefix_cache(model)
    encoded = corpus_examples(tok, 128)
    trainer = LocalTrainer(model, spec, tok.pad_token_id)
    start = get_flat(model, spec)
    eager = TrainParams(steps=args.steps, batch_size=8, lr=1e-4, precision="bf16", prefix_cache=True)
    compiled = TrainParams(**{**eager.__dict__, "compile": True, "compile_backend": "inductor"})

    def run(p: TrainParams, seed: int) -> float:
        t0 = time.perf_counter()
        trainer.train(start, encoded, p, seed=seed)
        set_flat(model, spec, start)
        return time.perf_counter() - t0

    for seed in (0, 1):  # fill the prefix cache for both seeds' batches
        run(eager, seed)
    first = run(compiled, 0)
    per_step = {"eager": [], "compiled": []}
    for rep in range(2):
        for name, p in (("eager", eager), ("compiled", compiled)):
            per_step[name].append(run(p, rep % 2) / args.steps)
    e, c = min(per_step["eager"]), min(per_step["compiled"])
    overhead = first - args.steps * c
    even = overhead / (e - c) if e > c else float("inf")
    lines = [
        f"## torch.compile (inductor) on CPU - {describe_device(torch.device('cpu'))}",
        "",
        f"`python bench/compile_cpu.py --steps {args.steps} --threads {args.threads}`: SmolLM2-135M, FFA r=8 "
        f"on the top 6 layers, prefix cache, bf16 autocast, batch 8, corpus data; best of 2 per mode.",
        "",
        f"- first compiled call ({args.steps} steps, compiles): {first:.1f} s",
        f"- eager {e:.3f} s/step, compiled {c:.3f} s/step ({e / c:.2f}x)",
        f"- compile overhead ~{overhead:.0f} s; break-even after ~{even:.0f} steps",
    ]
    print("\n".join(lines))
    if args.out is not None:
        with args.out.open("a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
