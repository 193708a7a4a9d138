"""Local-training throughput: plain transformers + PEFT vs Consortium's trainer, one gain at a time.

Every row trains the same model with the same LoRA adapter, batch size and examples for the same number
of steps, and adds one change to the row above it, so each gain is attributed separately:

    plain eager          random batches padded to their longest, HF `labels=` loss (full-vocab logits)
    + response-only      only response positions are projected to the vocabulary
    + length bucketing   batches of similar lengths (LocalTrainer with every fast path off)
    + packing            each batch's examples end to end, block-diagonal attention, no padding
    + fused AdamW        fused=True on CUDA, foreach=True on CPU
    + torch.compile      the decoder compiled (CUDA; on CPU only with --cpu-compile, to measure it)
    + bf16 autocast      CUDA only
    + chunked loss       (memory) the response projection in 1024-row chunks, recomputed in backward
    + checkpointing      (memory) activations recomputed in backward

Tokens/s counts real (non-padding) tokens, so padding is never rewarded. Peak memory is CUDA
`max_memory_allocated`, or the process's peak RSS on CPU.

    python bench/train_throughput.py                                  # tiny random Llama (seconds)
    python bench/train_throughput.py --model smollm2 --steps 4        # SmolLM2-135M-Instruct
    python bench/train_throughput.py --shape llama-1b --data synthetic --batch-size 16 --seq-len 1024  # GPU
    python bench/train_throughput.py --shape llama-8b --fit    # 8B LoRA memory fit (GPU; CPU: estimate)
    python bench/train_throughput.py --model smollm2 --suite cpu      # the CPU gains (below)

`--suite cpu` (the default without CUDA) measures what pays on a CPU instead, one gain per row: plain
transformers + PEFT fp32 with adapters on every layer first, then our trainer, bf16 autocast, adapters
on the top k layers only, and the frozen-prefix cache (fp32, bf16); `--cpu-compile` adds torch.compile
(inductor) on the fastest row. The LoRA is the demo's (FFA, r = 8, all 7 linear modules). A 2048^2
matmul is timed in fp32 and bf16 in the same run, and each row's matmul FLOP rate (linear layers and
LM head, fwd + input-grad bwd, per real token) is given as a share of its precision's roofline.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedkit import (
    SHAPE_NAMES,
    PeakMemory,
    Row,
    corpus_examples,
    describe_device,
    load_model,
    matmul_roofline,
    pick_dtype,
    render,
    synthetic_examples,
)

from consortium.model import LoraSpec, attach, get_flat, load_base, set_flat
from consortium.model.lora import layer_indices
from consortium.model.prefix import enable_prefix_cache
from consortium.model.shapes import lora_memory_estimate, shape_config
from consortium.train import LocalTrainer, TrainParams, collate, response_loss, speed_settings
from consortium.train_fast import bf16_native


def plain_run(
    model, encoded, params: TrainParams, pad_id: int, seed: int, device, how: str, fwd=None
) -> tuple:
    """The usual loop: random batches padded to the longest; `how` = "hf" (labels= loss) or "response"."""
    rng = random.Random(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=params.lr)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for _ in range(params.steps):
        batch = {k: v.to(device) for k, v in collate(rng.sample(encoded, params.batch_size), pad_id).items()}
        loss = (fwd or model)(**batch).loss if how == "hf" else response_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.eval()
    return tokens, time.perf_counter() - t0


def configurations(cuda: bool, cpu_compile: bool) -> list[tuple[str, str, dict, str]]:
    """(row name, runner, TrainParams overrides, skip reason or ""), cumulative top to bottom."""
    compile_skip = "" if cuda or cpu_compile else "CPU: skipped by design (--cpu-compile measures it)"
    base = {"fused_optimizer": False}
    packed = {"packing": True}
    fused = {**packed, "fused_optimizer": True}
    compiled = {**fused, "compile": True, "compile_backend": None if cuda else "inductor"}
    fastest = {**compiled, "bf16": True} if cuda else fused if not cpu_compile else compiled
    return [
        ("plain eager (transformers + PEFT)", "plain-hf", {}, ""),
        ("plain + torch.compile (reference)", "plain-compiled", {}, compile_skip),
        ("+ response-only projection", "plain-response", {}, ""),
        ("+ length bucketing", "ours", base, ""),
        ("+ packing", "ours", {**base, **packed}, ""),
        ("+ fused AdamW (foreach on CPU)", "ours", fused, ""),
        ("+ torch.compile", "ours", compiled, compile_skip),
        (
            "+ bf16 autocast",
            "ours",
            {**compiled, "bf16": True},
            "" if cuda else "CPU: see --suite cpu (precision = auto/bf16)",
        ),
        ("fastest + chunked loss (memory)", "ours", {**fastest, "loss_chunk": 1024}, ""),
        ("fastest + checkpointing (memory)", "ours", {**fastest, "gradient_checkpointing": True}, ""),
        (
            "fastest + both (memory)",
            "ours",
            {**fastest, "gradient_checkpointing": True, "loss_chunk": 1024},
            "",
        ),
    ]


def estimate_rows(shape: str, batch: int, seq: int, dtype: torch.dtype, response_frac: float) -> list[Row]:
    """Analytic memory of an 8B-class LoRA step in four settings (no allocation)."""
    cfg = shape_config(shape)
    tokens = batch * seq
    nbytes = torch.empty((), dtype=dtype).element_size()
    rows = []
    for gc in (False, True):
        for chunk in (0, 1024):
            est = lora_memory_estimate(cfg, tokens, int(tokens * response_frac), nbytes, 16, 4, gc, chunk)
            fits = "fits 80 GB" if est.total <= 80e9 else "does NOT fit 80 GB"
            name = f"estimate: checkpointing={'on' if gc else 'off'}, loss_chunk={chunk}"
            rows.append(Row(name, None, est.total, f"{fits} (weights {est.weights / 2**30:.1f} GiB)"))
    return rows


DEMO_SPEC = dict(
    variant="ffa",
    r=8,
    alpha=16.0,
    target_modules=tuple(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
)


def linear_flops_per_token(cfg, n_fwd: int, n_bwd: int, head_share: float) -> float:
    """Matmul FLOPs per real token of a LoRA step: the frozen linear layers forward (`n_fwd` layers)
    and their input gradients backward (`n_bwd` layers; frozen weights need no weight gradient), plus
    the LM head forward and backward on `head_share` of the tokens. Attention scores and the rank-r
    adapters (under 2% here) are left out, so the share of roofline is slightly understated."""
    d, inter = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = d * (2 * d + 2 * kv) + 3 * d * inter
    return 2 * per_layer * (n_fwd + n_bwd) + 4 * d * cfg.vocab_size * head_share


def cpu_suite(args, device: torch.device) -> None:
    """Plain transformers + PEFT fp32 (all layers), then one CPU gain per row, measured round-robin."""
    top = f"top:{args.top}"
    roof = matmul_roofline(device)
    print(
        f"matmul roofline (2048^2): fp32 {roof['float32']:.0f} GFLOP/s, bf16 {roof['bfloat16']:.0f} GFLOP/s"
    )
    bf16 = "bf16" if bf16_native(device) or args.force_bf16 else None
    t6 = f"top {args.top}"
    rows_def = [  # (name, model: layers[+cache][@bf16 weights], runner, overrides)
        ("plain transformers + PEFT, fp32, all layers", "all", "plain-hf", {}),
        ("+ our trainer (response-only loss, bucketing, foreach AdamW)", "all", "ours", {}),
        ("+ bf16 autocast", "all", "ours", {"precision": "bf16"}),
        ("+ frozen base stored in bf16 (model.dtype)", "all@bf16", "ours", {"precision": "bf16"}),
        ("+ packing (no padding)", "all@bf16", "ours", {"precision": "bf16", "packing": True}),
        ("+ eager attention (no packing)", "all@bf16", "ours", {"precision": "bf16", "attention": "eager"}),
        (f"adapters on the {t6} layers only, fp32 (forward still full depth)", top, "ours", {}),
        (f"{t6} + prefix cache, fp32", top + "+cache", "ours", {"prefix_cache": True}),
        (
            f"{t6} + prefix cache, bf16 autocast",
            top + "+cache",
            "ours",
            {"precision": "bf16", "prefix_cache": True},
        ),
        (
            f"{t6} + prefix cache, bf16 autocast, bf16 base",
            top + "+cache@bf16",
            "ours",
            {"precision": "bf16", "prefix_cache": True},
        ),
    ]
    if args.cpu_compile:
        rows_def.append(
            (
                f"{t6} + prefix cache, bf16, bf16 base + torch.compile (inductor)",
                top + "+cache@bf16",
                "ours",
                {"precision": "bf16", "prefix_cache": True, "compile": True, "compile_backend": "inductor"},
            )
        )
    if bf16 is None:  # no native bf16: those rows would measure emulation
        rows_def = [r for r in rows_def if r[3].get("precision") != "bf16"]
    if args.only:  # 1-based row numbers; the plain row (the baseline of every ratio) is always kept
        keep = {1} | {int(x) for x in args.only.split(",") if x}
        rows_def = [r for k, r in enumerate(rows_def, start=1) if k in keep]
    models: dict[str, tuple] = {}
    for _, key, _, _ in rows_def:
        if key in models:
            continue
        layers, _, weights = key.partition("@")
        base, tok = load_base(args.model, dtype=torch.bfloat16 if weights == "bf16" else torch.float32)
        spec = LoraSpec(**DEMO_SPEC, layers=layers.removesuffix("+cache"))
        model = attach(base.to(device), spec)
        if layers.endswith("+cache"):
            enable_prefix_cache(model)
        models[key] = (model, spec, LocalTrainer(model, spec, tok.pad_token_id), get_flat(model, spec), tok)
    tok = next(iter(models.values()))[4]
    encoded = corpus_examples(tok, args.seq_len)[: args.pool]
    params = TrainParams(steps=args.steps, batch_size=args.batch_size, lr=1e-4)
    cfg = next(iter(models.values()))[0].get_base_model().config
    n = cfg.num_hidden_layers
    labelled = sum(sum(1 for x in e.labels[1:] if x != -100) for e in encoded)
    response = labelled / sum(len(e.input_ids) for e in encoded)
    rates: dict[int, list[float]] = {k: [] for k in range(len(rows_def))}
    peaks = dict.fromkeys(rates, 0)
    first: dict[int, float] = {}
    epoch = -(-len(encoded) // args.batch_size)
    # round-robin; the warm-up round compiles and, for the cached rows, runs one epoch over the pool so
    # every example's prefix is cached (as a participant's shard is after its first epoch)
    for rep in range(args.repeats + 1):
        for k, (name, key, runner, overrides) in enumerate(rows_def):
            model, spec, trainer, start, tok = models[key]
            p = dataclasses.replace(params, **overrides)
            model.get_base_model().set_attn_implementation(p.attention or "sdpa")  # rows share models
            if rep == 0 and p.prefix_cache:
                p = dataclasses.replace(p, steps=epoch)
            t0 = time.perf_counter()
            with PeakMemory(device) as mem:
                if runner == "ours":
                    res = trainer.train(start, encoded, p, seed=rep)
                    tokens, seconds = res.tokens, res.seconds
                else:
                    tokens, seconds = plain_run(model, encoded, p, tok.pad_token_id, rep, device, "hf")
            set_flat(model, spec, start)
            peaks[k] = max(peaks[k], mem.peak)
            if rep:
                rates[k].append(tokens / seconds)
                print(f"  round {rep}, {name}: {tokens / seconds:,.0f} tokens/s", flush=True)
            else:
                first[k] = time.perf_counter() - t0
    again = matmul_roofline(device)  # the best of before and after: the least disturbed measurement
    roof = {d: max(roof[d], again[d]) for d in roof}
    rows = []
    for k, (name, key, runner, overrides) in enumerate(rows_def):
        layers = key.partition("@")[0]
        lowest = layer_indices(layers.removesuffix("+cache"), n)
        n_bwd = n - (lowest[0] if lowest else 0)
        n_fwd = n_bwd if layers.endswith("+cache") else n
        flops = linear_flops_per_token(cfg, n_fwd, n_bwd, 1.0 if runner == "plain-hf" else response)
        rate = statistics.median(rates[k])
        ceiling = roof["bfloat16" if overrides.get("precision") == "bf16" else "float32"]
        share = rate * flops / 1e9 / ceiling
        note = f"{rate * flops / 1e9:.0f} GFLOP/s = {share:.0%} of roofline; warm-up round {first[k]:.1f} s"
        if overrides.get("prefix_cache"):
            stats = speed_settings(models[key][0], TrainParams(1, 1, 1.0))["prefix_cache"]
            size = sum(c["bytes"] for c in stats["caches"].values()) / 2**20
            note += f" (fills the cache: {len(encoded)} examples, {size:.0f} MiB)"
        rows.append(Row(name, rate, peaks[k], note))
    title = (
        f"local training on CPU, {args.model} (fp32 weights unless noted), FFA r=8 on all 7 linear modules, "
        "corpus data "
        f"({len(encoded)} examples, max_len {args.seq_len}, {response:.0%} response tokens), "
        f"batch {args.batch_size}, "
        f"{args.steps} steps x {args.repeats} rounds after a warm-up - {describe_device(device)}; "
        f"roofline fp32 {roof['float32']:.0f} / bf16 {roof['bfloat16']:.0f} GFLOP/s"
    )
    render(title, "tokens/s", PeakMemory(device).label, rows, rows[0].rate or 0.0, args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default="tiny", help="tiny | tiny-warm | smollm2 | HF id (ignored with --shape)"
    )
    ap.add_argument("--shape", choices=SHAPE_NAMES, help="random-init Llama of this shape instead of --model")
    ap.add_argument("--data", choices=("corpus", "synthetic", "fixed"), default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--seq-len", type=int, default=128, help="max_len (corpus) or sequence length (synthetic)"
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    ap.add_argument("--attn", default=None, help="attention implementation: sdpa | eager | flash_attention_2")
    ap.add_argument("--cpu-compile", action="store_true", help="measure torch.compile (inductor) on CPU too")
    ap.add_argument("--only", default="", help="comma-separated row numbers to run (1-based); default all")
    ap.add_argument("--fit", action="store_true", help="memory-fit check: estimates, then measured rows")
    ap.add_argument("--estimate-only", action="store_true", help="print the analytic memory estimate only")
    ap.add_argument("--out", type=Path, help="append the table as Markdown to this file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--suite", choices=("auto", "gpu", "cpu"), default="auto", help="auto: cpu without CUDA")
    ap.add_argument(
        "--pool", type=int, default=160, help="--suite cpu: training examples (a demo shard ~130)"
    )
    ap.add_argument("--top", type=int, default=6, help="--suite cpu: adapters on the top k layers")
    ap.add_argument(
        "--force-bf16", action="store_true", help="--suite cpu: bf16 rows even without native bf16"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.suite == "cpu" or (
        args.suite == "auto" and device.type == "cpu" and not (args.fit or args.shape or args.estimate_only)
    ):
        cpu_suite(args, device)
        return
    dtype = pick_dtype(args.dtype, device)
    if args.fit or args.estimate_only:
        shape = args.shape or "llama-8b"
        est_dtype = torch.bfloat16 if args.dtype == "auto" else dtype  # what a GPU run would load
        rows = estimate_rows(shape, args.batch_size, args.seq_len, est_dtype, 0.3)
        title = f"LoRA memory estimate, {shape} ({est_dtype}), batch {args.batch_size} x {args.seq_len}"
        render(title, "-", "estimate", rows, 0, args.out)
        if args.estimate_only or device.type != "cuda":
            if device.type != "cuda":
                print(f"no CUDA device: {shape} is not allocated here; the figures above are analytic")
            return

    base, tok, pad = load_model(args.model, args.shape, device, dtype, args.attn)
    spec = LoraSpec(variant="lora", r=16, alpha=32.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    model = attach(base, spec)
    data = args.data or ("synthetic" if args.shape else "corpus")
    if data == "corpus":
        if tok is None:
            raise SystemExit("--data corpus needs a tokenizer: use --model, or --data synthetic with --shape")
        encoded = corpus_examples(tok, args.seq_len)
    else:
        n = max(64, args.batch_size * args.steps)
        encoded = synthetic_examples(base.config.vocab_size, args.seq_len, n, fixed=data == "fixed")
    params = TrainParams(steps=args.steps, batch_size=args.batch_size, lr=1e-4)
    trainer = LocalTrainer(model, spec, pad)
    start = get_flat(model, spec)
    plain_compiled = None

    only = {int(x) for x in args.only.split(",") if x}
    configs = configurations(device.type == "cuda", args.cpu_compile)
    if args.fit:
        configs = [c for c in configs if c[0].startswith("fastest")]
    runs = {k: c for k, c in enumerate(configs, 1) if not c[3] and (not only or k in only)}
    rates: dict[int, list[float]] = {k: [] for k in runs}
    peaks: dict[int, int] = dict.fromkeys(runs, 0)
    first: dict[int, float] = {}
    failed: dict[int, str] = {}
    # round-robin over the configurations, so that load from other processes (a shared CPU) spreads
    # evenly over them; the first round warms up (and compiles) and is not counted
    for rep in range(args.repeats + 1):
        for k, (name, runner, overrides, _) in runs.items():
            if k in failed:
                continue
            p = dataclasses.replace(params, **overrides)
            model.get_base_model().set_attn_implementation(p.attention or "sdpa")  # rows share models
            t0 = time.perf_counter()
            try:
                with PeakMemory(device) as mem:
                    if runner == "ours":
                        res = trainer.train(start, encoded, p, seed=rep)
                        tokens, seconds = res.tokens, res.seconds
                    else:
                        if runner == "plain-compiled" and plain_compiled is None:
                            plain_compiled = torch.compile(model)
                        how = "hf" if runner != "plain-response" else "response"
                        fwd = plain_compiled if runner == "plain-compiled" else None
                        tokens, seconds = plain_run(model, encoded, p, pad, rep, device, how, fwd)
                        set_flat(model, spec, start)
            except torch.OutOfMemoryError:
                failed[k] = "out of memory"
                set_flat(model, spec, start)
                torch.cuda.empty_cache()
                continue
            peaks[k] = max(peaks[k], mem.peak)
            if rep:
                rates[k].append(tokens / seconds)
                print(f"  round {rep}, {name}: {tokens / seconds:,.0f} tokens/s", flush=True)
            else:
                first[k] = time.perf_counter() - t0
    set_flat(model, spec, start)

    rows: list[Row] = []
    for k, (name, _, overrides, skip) in enumerate(configs, 1):
        if k not in runs or k in failed:
            rows.append(Row(name, None, 0, failed.get(k) or skip or "not run"))
            continue
        xs = sorted(rates[k])
        note = f"best {xs[-1]:,.0f}"
        if overrides.get("compile") or name.startswith("plain + torch.compile"):
            note += f"; first run {first[k]:.1f} s (compiles)"
        dec = trainer._decoders.get((overrides.get("compile", False), overrides.get("compile_backend")))
        if dec is not None and dec.fell_back:
            note += f"; compile fell back: {dec.fell_back[:60]}"
        if args.fit:
            note += f"; {'fits' if peaks[k] <= 80e9 else 'does NOT fit'} 80 GB (measured)"
        rows.append(Row(name, statistics.median(xs), peaks[k], note))

    what = args.shape or args.model
    title = (
        f"local training, {what} ({dtype}), {data} data, batch {args.batch_size}, seq {args.seq_len}, "
        f"{args.steps} steps x {args.repeats} - {describe_device(device)}"
    )
    baseline = rows[0].rate or 0.0
    render(title, "tokens/s", PeakMemory(device).label, rows, baseline, args.out)


if __name__ == "__main__":
    main()
