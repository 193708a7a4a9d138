"""Sequence packing: a batch's examples laid end to end in a few rows, with no attention across examples.

Packing changes only the layout of a batch, never which examples are in it, so a packed step takes the
same loss (the mean over the same response tokens) as the padded one. The attention boundaries come from
`position_ids` that restart at 0 for every example and *no* `attention_mask`: transformers' mask builder
(`masking_utils.find_packed_sequence_indices`) then turns the restarts into a block-diagonal causal mask
for sdpa/eager/flex, and the flash-attention integration turns them into varlen `cu_seqlens` (it wants
one row, so `pack_rows(..., budget=None)` puts everything in one row).

The first label of every example is IGNORE: in a padded batch it is never a target (nothing precedes it),
in a packed row it would otherwise be the target of the previous example's last token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from consortium.data import EncodedExample

IGNORE = -100


def pack_rows(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `budget` tokens (first-fit decreasing).

    `budget=None` means one row holding everything (flash-attention varlen). A budget below the longest
    example is raised to it (an example is never split). Deterministic: ties keep the input order.
    """
    if not lengths:
        raise ValueError("pack_rows: no examples to pack")
    if any(n < 1 for n in lengths):
        raise ValueError(f"pack_rows: every example needs at least one token, got lengths {list(lengths)}")
    if budget is None:
        return [list(range(len(lengths)))]
    budget = max(budget, max(lengths))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(budget - lengths[i])
    return rows


def collate_packed(
    batch: Sequence[EncodedExample], pad_id: int, budget: int | None = None, pad_to_multiple: int = 1
) -> dict[str, torch.Tensor]:
    """`input_ids`, `position_ids`, `labels` of the packed batch (no `attention_mask`: see module doc).

    `budget`: tokens per row (None: one row; 0: the batch's longest example). Rows are right-padded to
    the longest row (rounded up to `pad_to_multiple`, which keeps shapes few for torch.compile); the
    padding is a segment of its own (positions restart at 0) that no real token attends to and that is
    never a target.
    """
    lengths = [len(e.input_ids) for e in batch]
    rows = pack_rows(lengths, max(lengths) if budget == 0 else budget)
    width = max(sum(lengths[i] for i in row) for row in rows)
    width = -(-width // pad_to_multiple) * pad_to_multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e, n = batch[i], lengths[i]
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at + 1 : at + n] = torch.tensor(e.labels[1:])
            pos[r, at : at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(width - at)  # the padding tail: its own segment
    return {"input_ids": ids, "position_ids": pos, "labels": labels}


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Which segment (example or padding tail) each position belongs to, per row: a new one at every
    restart of the positions. Used by tests as an independent reference for the mask transformers builds."""
    return (torch.diff(position_ids, dim=-1, prepend=position_ids[:, :1] - 1) != 1).cumsum(-1)
