"""Local LoRA fine-tuning of one participant: seeded, length-bucketed batches, loss on responses only.

The base model is loaded once per process with one adapter attached; participants are swapped in by
writing their starting vector into the adapter (`set_flat`), never by reloading the model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from peft import PeftModel

from consortium.data import EncodedExample
from consortium.model import LoraSpec, get_flat, set_flat

IGNORE = -100


@dataclass(frozen=True)
class TrainParams:
    """The knobs of local training (a plain mirror of the config's `train` section)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    grad_clip: float = 1.0


@dataclass
class LocalResult:
    """What one participant's local training produced: the update (delta) and how it went."""

    delta: torch.Tensor
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    snapshots: list[torch.Tensor] = field(default_factory=list)  # delta every k steps (probe step level)


def bucketed_batches(
    examples: Sequence[EncodedExample], batch_size: int, steps: int, rng: random.Random, bucket: int = 8
) -> Iterator[list[EncodedExample]]:
    """`steps` batches; examples of similar length share a batch so little compute goes to padding.

    Each epoch: shuffle, cut into windows of `bucket` batches, sort each window by length, split into
    batches and shuffle their order. Deterministic for a given `rng`.
    """
    if not examples:
        raise ValueError("no training examples for this participant")
    produced = 0
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        window = batch_size * bucket
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: len(examples[i].input_ids))
            batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        for b in batches:
            yield [examples[i] for i in b]
            produced += 1
            if produced == steps:
                return


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence of the batch; padding is masked and never a target."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def response_loss(model: PeftModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token loss over response tokens, projecting only those positions to the vocabulary.

    Same value as the HF `labels=` loss, but the full-vocabulary logits of prompt and padding tokens
    (most of a short-answer batch) are never computed: on SmolLM2 the LM head is ~20% of a forward.
    """
    causal_lm = model.get_base_model()
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


class LocalTrainer:
    """Trains the one attached adapter for any participant, starting from a given global vector."""

    def __init__(self, model: PeftModel, spec: LoraSpec, pad_id: int) -> None:
        self.model = model
        self.spec = spec
        self.pad_id = pad_id
        self.device = next(model.parameters()).device

    def train(
        self,
        start: torch.Tensor,
        examples: Sequence[EncodedExample],
        params: TrainParams,
        seed: int,
        snapshot_every: int = 0,
    ) -> LocalResult:
        """Fine-tune from `start` for `params.steps` steps; returns the delta (local - start) and, with
        `snapshot_every = k > 0`, the delta after every k-th step (what the step-level probe scores)."""
        set_flat(self.model, self.spec, start)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
        rng = random.Random(seed)
        result = LocalResult(delta=torch.empty(0))
        t0 = time.perf_counter()
        self.model.train()
        try:
            for batch in bucketed_batches(examples, params.batch_size, params.steps, rng):
                inputs = {k: v.to(self.device) for k, v in collate(batch, self.pad_id).items()}
                loss = response_loss(self.model, inputs)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                result.losses.append(float(loss.detach()))
                result.tokens += int(inputs["attention_mask"].sum())
                if snapshot_every and len(result.losses) % snapshot_every == 0:
                    result.snapshots.append(get_flat(self.model, self.spec) - start)
        finally:
            self.model.eval()
        result.seconds = time.perf_counter() - t0
        result.delta = get_flat(self.model, self.spec) - start
        return result
