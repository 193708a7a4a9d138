"""Bytes on the wire per participant per round for each LoRA variant, on SmolLM2-135M's shape.

    .venv/bin/python bench/lora_bytes.py [--clients 5] [--out bench/results/lora_bytes.md]

No training and no download: the layout comes from a SmolLM2-135M-shaped Llama built on the meta
device (hidden 576, intermediate 1536, 30 layers, 9 heads, 3 KV heads), with the demo preset's target
modules (every linear layer) and with q/v only. The blob size is the safetensors file the store holds
(float32 payload + header with the tensor names). It also times FLoRA's aggregation + rank-r projection
of `--clients` random updates on the full demo layout (CPU, float64), the cost FLoRA adds to a round.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import LlamaForCausalLM

from consortium.aggregate_lora import flora_candidate
from consortium.model import LoraSpec, attach, layout, layout_size
from consortium.model.shapes import shape_config
from consortium.store import tensors_to_bytes

DEMO_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VARIANTS = ("lora", "ffa", "flora", "fedsb")


def smollm2_layout(spec: LoraSpec) -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        model = LlamaForCausalLM(shape_config("smollm2-135m"))
    return layout(attach(model, spec), spec)


def blob_bytes(lay: list[tuple[str, tuple[int, ...]]]) -> int:
    return len(tensors_to_bytes({k: torch.zeros(shape) for k, shape in lay}))


def table(modules: tuple[str, ...], r: int) -> list[str]:
    rows = [
        f"### target modules {', '.join(modules)}; r = {r}",
        "",
        "| variant | communicated params | payload bytes | blob bytes (up = down) | payload vs lora |",
        "|---|---:|---:|---:|---:|",
    ]
    base = None
    for v in VARIANTS:
        lay = smollm2_layout(LoraSpec(variant=v, r=r, alpha=2.0 * r, target_modules=modules))  # type: ignore[arg-type]
        n = layout_size(lay)
        base = base or n
        rows.append(f"| {v} | {n:,} | {4 * n:,} | {blob_bytes(lay):,} | {n / base:.4f} (1/{base / n:.1f}) |")
    return [*rows, ""]


def time_flora(clients: int, r: int) -> str:
    spec = LoraSpec(variant="flora", r=r, alpha=2.0 * r, target_modules=DEMO_MODULES)
    lay = smollm2_layout(spec)
    d = layout_size(lay)
    g = torch.Generator().manual_seed(0)
    global_vec = torch.randn(d, generator=g) * 0.02
    deltas = torch.randn(clients, d, generator=g) * 0.002
    weights = torch.full((clients,), 1.0 / clients, dtype=torch.float64)
    t0 = time.perf_counter()
    _, info = flora_candidate(lay, global_vec, deltas, weights, 1.0)
    secs = time.perf_counter() - t0
    return (
        f"FLoRA aggregation + projection, {clients} clients, demo layout ({d:,} values): {secs:.2f} s "
        f"({torch.get_num_threads()} thread(s)); relative projection error on random updates "
        f"{info['projection_relative_error']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lines = [
        "## Bytes per participant per round, SmolLM2-135M shape",
        "",
        *table(DEMO_MODULES, args.r),
        *table(("q_proj", "v_proj"), args.r),
        time_flora(args.clients, args.r),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
