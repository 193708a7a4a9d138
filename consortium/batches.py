"""How a participant's encoded examples become batches: a seeded, length-bucketed order and the padded
layout. Below `consortium.train` and `consortium.model` alike, so the tiny model's warm-up
(`consortium.model.warm`) batches its corpus without importing the trainer (which imports the model).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from consortium.data import EncodedExample

IGNORE = -100  # the label of a token that is never a target (prompt, padding)


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
