"""Exact-match task accuracy per domain with batched greedy decoding."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from consortium.data import Example, encode_prompt


def normalise(text: str) -> str:
    """Compare answers modulo surrounding whitespace and one trailing full stop (nothing else)."""
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def is_correct(prediction: str, reference: str) -> bool:
    return normalise(prediction) == normalise(reference)


@torch.no_grad()
def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuations, batched by similar prompt length with left padding."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            mask[row, width - n :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
        if on_batch is not None:
            on_batch(len(idx))
    return out


def accuracy_by_domain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    batch_size: int,
    max_new_tokens: int,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Exact-match accuracy per domain, plus `mean` (the unweighted mean over domains)."""
    answers = greedy_answers(
        model, tokenizer, [e.prompt for e in examples], batch_size, max_new_tokens, on_batch
    )
    hits: dict[str, list[bool]] = defaultdict(list)
    for ex, ans in zip(examples, answers, strict=True):
        hits[ex.domain].append(is_correct(ans, ex.response))
    acc = {d: sum(h) / len(h) for d, h in sorted(hits.items())}
    acc["mean"] = sum(acc.values()) / len(acc)
    return acc
