"""Local-training throughput: Consortium's trainer vs plain transformers + PEFT on the same work.

Both train the same model with the same LoRA adapter, batch size and examples for the same number of
steps. "Plain" draws random batches padded to their longest member and takes the HF `labels=` loss
(full-vocabulary logits for every position); ours batches by length and projects only response
positions to the vocabulary. Tokens/s counts real (non-padding) tokens, so padding is not rewarded.

    python bench/train_throughput.py                   # tiny random Llama (seconds)
    python bench/train_throughput.py --model smollm2   # SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from rich.console import Console
from rich.table import Table

from consortium.data import build_corpus, encode_example
from consortium.model import LoraSpec, attach, get_flat, load_base
from consortium.train import LocalTrainer, TrainParams, collate


def plain_peft(model, spec: LoraSpec, encoded, params: TrainParams, pad_id: int, seed: int, device) -> float:
    """The usual loop: random batches, padded to the longest, HF loss over the full vocabulary."""
    rng = random.Random(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=params.lr)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for _ in range(params.steps):
        batch = collate(rng.sample(encoded, params.batch_size), pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.eval()
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, tok = load_base(args.model)
    base.to(device)
    spec = LoraSpec(variant="ffa", r=8, alpha=16.0)
    model = attach(base, spec)
    corpus = build_corpus(["arithmetic", "units", "dates", "strings", "policy"], 100, 1, seed=0)
    encoded = [encode_example(tok, e, args.max_len) for e in corpus.train]
    params = TrainParams(steps=args.steps, batch_size=args.batch_size, lr=1e-3)
    trainer = LocalTrainer(model, spec, tok.pad_token_id)
    start = get_flat(model, spec)

    ours, plain = [], []
    for rep in range(args.repeats + 1):  # the first pass warms up both paths and is not counted
        res = trainer.train(start, encoded, params, seed=rep)
        p = plain_peft(model, spec, encoded, params, tok.pad_token_id, rep, device)
        if rep:
            ours.append(res.tokens / res.seconds)
            plain.append(p)
    table = Table(title=f"local training, {args.model} on {device.type} ({torch.get_num_threads()} threads)")
    for col in ("path", "tokens/s (best)", "tokens/s (median)"):
        table.add_column(col, justify="right")
    for name, xs in (("plain transformers + PEFT", plain), ("consortium", ours)):
        table.add_row(name, f"{max(xs):,.0f}", f"{sorted(xs)[len(xs) // 2]:,.0f}")
    Console().print(table)
    print(f"speed-up (median): {sorted(ours)[len(ours) // 2] / sorted(plain)[len(plain) // 2]:.2f}x")


if __name__ == "__main__":
    main()
