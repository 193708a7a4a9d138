"""Exact-match task accuracy per domain with batched greedy decoding."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from consortium.batches import IGNORE, collate
from consortium.data import EncodedExample, Example, encode_example, encode_prompt
from consortium.train import decoder_hidden, response_loss


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
    system: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuations, batched by similar prompt length with left padding."""
    encoded = [encode_prompt(tokenizer, p, system) for p in prompts]
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


@torch.no_grad()
def teacher_forced_verdicts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    batch_size: int,
    system: str | None = None,
    max_len: int = 512,
    on_batch: Callable[[int], None] | None = None,
) -> list[bool]:
    """Exact match in one forward pass: correct iff every reference token (and the end-of-turn token
    after it) is the argmax given the reference prefix, i.e. iff greedy decoding would produce exactly
    the reference and stop. No decode loop, and only answer positions are projected to the vocabulary.
    With a prefix cache on the model (`consortium.model.prefix`) only the adapted layers run.
    """
    encoded = [encode_example(tokenizer, e, max_len, system) for e in examples]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    verdicts = [False] * len(encoded)
    device = next(model.parameters()).device
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = {
            k: v.to(device) for k, v in collate([encoded[i] for i in idx], tokenizer.pad_token_id).items()
        }
        hidden = decoder_hidden(model, batch)  # the frozen prefix from the cache, when one is enabled
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        pred = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).argmax(-1)
        hit = torch.ones_like(targets, dtype=torch.bool)
        hit[keep] = pred == targets[keep]
        for row, i in enumerate(idx):
            verdicts[i] = bool(hit[row].all())
        if on_batch is not None:
            on_batch(len(idx))
    return verdicts


def exact_match_verdicts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    method: Literal["teacher_forced", "greedy"],
    batch_size: int,
    max_new_tokens: int,
    system: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[bool]:
    """One verdict per example, by a teacher-forced pass (fast) or by greedy generation (free-form)."""
    if method == "teacher_forced":
        return teacher_forced_verdicts(model, tokenizer, examples, batch_size, system, on_batch=on_batch)
    prompts = [e.prompt for e in examples]
    answers = greedy_answers(model, tokenizer, prompts, batch_size, max_new_tokens, system, on_batch)
    return [is_correct(a, e.response) for a, e in zip(answers, examples, strict=True)]


def accuracy_by_domain(examples: Sequence[Example], verdicts: Sequence[bool]) -> dict[str, float]:
    """Exact-match accuracy per domain, plus `mean` (the unweighted mean over domains)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for ex, ok in zip(examples, verdicts, strict=True):
        hits[ex.domain].append(ok)
    acc = {d: sum(h) / len(h) for d, h in sorted(hits.items())}
    acc["mean"] = sum(acc.values()) / len(acc)
    return acc


@torch.no_grad()
def heldout_loss(
    model: PreTrainedModel, encoded: Sequence[EncodedExample], pad_id: int, batch_size: int
) -> float:
    """Mean response-token loss over `encoded` (a voter's held-out set), token-weighted across batches."""
    if not encoded:
        raise ValueError("no held-out examples to evaluate on")
    device = next(model.parameters()).device
    total = 0.0
    tokens = 0
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in collate(encoded[start : start + batch_size], pad_id).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(response_loss(model, batch)) * n
        tokens += n
    return total / max(tokens, 1)
