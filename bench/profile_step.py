"""Where a full-depth local-training step spends its CPU time: torch.profiler over a few steps.

Issue 21 asks what in a bf16 step is not matmul. This runs Consortium's trainer on SmolLM2-135M with the
demo's LoRA (FFA, r = 8, all 7 linear modules, every layer), the frozen base stored in bf16 and bf16
autocast (or fp32 with --precision fp32), profiles `--steps` steps after a warm-up, and prints the ops
with the most self CPU time and the share of matmul-class ops. Shares, not seconds, are the figure:
they hold roughly when other jobs share the cores, absolute times do not.

    python bench/profile_step.py --steps 3 --threads 1 --out bench/results/profile_step_cpu.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedkit import corpus_examples, describe_device

from consortium.model import LoraSpec, attach, get_flat, load_base
from consortium.train import LocalTrainer, TrainParams

DEMO_SPEC = dict(
    variant="ffa",
    r=8,
    alpha=16.0,
    target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)
# matrix products (forward and backward); everything else is what issue 21 asks to remove
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product", "aten::baddbmm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default=None, help="attention; default: the model's")
    ap.add_argument("--repeats", type=int, default=2, help="unprofiled timings per attention")
    ap.add_argument("--top", type=int, default=20, help="ops listed")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    base, tok = load_base("smollm2", dtype=dtype)
    if args.attn:
        base.set_attn_implementation(args.attn)
    spec = LoraSpec(**DEMO_SPEC)
    model = attach(base, spec)
    trainer = LocalTrainer(model, spec, tok.pad_token_id)
    start = get_flat(model, spec)
    encoded = corpus_examples(tok, args.seq_len)[:64]
    params = TrainParams(steps=args.steps, batch_size=args.batch_size, lr=1e-4, precision=args.precision)
    trainer.train(start, encoded, TrainParams(steps=1, batch_size=args.batch_size, lr=1e-4), seed=0)
    rates: dict[str, list[float]] = {"sdpa": [], "eager": []}
    for _ in range(args.repeats):  # the same steps unprofiled, each attention in turn: rates in one run
        for name, runs in rates.items():
            base.set_attn_implementation(name)
            plain = trainer.train(start, encoded, params, seed=1)
            runs.append(plain.tokens / plain.seconds)
    base.set_attn_implementation(args.attn or "sdpa")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        res = trainer.train(start, encoded, params, seed=1)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key.startswith(MATMUL_OPS))
    events.sort(key=lambda e: -e.self_cpu_time_total)
    attn = base.config._attn_implementation
    command = " ".join(["python bench/profile_step.py", *sys.argv[1:]])
    lines = [
        f"# One local-training step on CPU, profiled ({args.precision}, full depth)",
        "",
        f"`{command}` - SmolLM2-135M, base weights in "
        f"{dtype}, FFA r=8 on all 7 linear modules of all layers, batch {args.batch_size}, corpus "
        f"examples (seed 0), attention `{attn}`, {describe_device(torch.device('cpu'))}. "
        f"{args.steps} steps, {res.tokens} tokens, {res.seconds:.1f} s under the profiler.",
        "",
        f"Matmul-class ops ({', '.join(MATMUL_OPS)}): **{matmul / total:.0%}** of self CPU time.",
        "",
        "| op | self CPU share | calls |",
        "|---|---|---|",
    ]
    lines += [f"| `{e.key}` | {e.self_cpu_time_total / total:.1%} | {e.count} |" for e in events[: args.top]]
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    lines += [
        "",
        f"Without the profiler, the same {args.steps} steps, {args.repeats} times each in turn (median "
        "tokens/s): "
        + ", ".join(f"{k} attention {v:.0f}" for k, v in med.items())
        + (f"; eager / sdpa = {med['eager'] / med['sdpa']:.2f}x." if len(med) == 2 else "."),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
