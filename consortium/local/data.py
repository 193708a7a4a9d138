"""Which examples a participant trains on and which it keeps back to judge candidates with."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from consortium.data import DataError, Example, build_corpus, load_jsonl, partition

if TYPE_CHECKING:
    from consortium.config import RunConfig


def split_holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic held-out split (train, test) with at least one example on each side."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_test = min(max(1, round(len(order) * fraction)), len(order) - 1)
    test = [examples[i] for i in sorted(order[:n_test])]
    train = [examples[i] for i in sorted(order[n_test:])]
    return train, test


def prepare_data(cfg: RunConfig) -> tuple[list[list[Example]], list[Example]]:
    """Built-in corpus plus the config's JSONL files, partitioned among participants, and the shared
    test set. Raises DataError."""
    train: list[Example] = []
    test: list[Example] = []
    if cfg.data.domains:
        corpus = build_corpus(list(cfg.data.domains), cfg.data.n_train, cfg.data.n_test, cfg.seed)
        train += corpus.train
        test += corpus.test
    for path in cfg.data.jsonl:
        rows = load_jsonl(Path(path), domain=Path(path).stem)
        if len(rows) < 2:
            raise DataError(f"{path}: needs at least 2 examples (one to train, one to test), has {len(rows)}")
        tr, te = split_holdout(rows, cfg.data.test_fraction, cfg.seed)
        train += tr
        test += te
    if not train:
        raise DataError("data: no training data (data.domains is empty and no data.jsonl file given)")
    shards = partition(train, cfg.participants, cfg.data.partition, cfg.data.dirichlet_alpha, cfg.seed)
    return shards, test


def chain_split(shard: list[Example], cfg: RunConfig, index: int) -> tuple[list[Example], list[Example]]:
    """A chain participant's (train, held-out) split of its shard: voters judge on data never trained on."""
    if len(shard) < 2:
        raise DataError(
            f"org{index} has {len(shard)} example(s); protocol 'chain' needs 2 (train + held out)"
        )
    return split_holdout(shard, cfg.chain.holdout_fraction, cfg.seed + index)


def participant_data(
    cfg: RunConfig, index: int, data_jsonl: Path | None = None
) -> tuple[list[Example], list[Example]]:
    """Participant `index`'s (train, held-out) examples: its share of the config's data, exactly as
    the simulation gives it to `org<index>`, or the organisation's own JSONL file. Raises DataError."""
    if data_jsonl is None:
        shards, _ = prepare_data(cfg)
        return chain_split(shards[index], cfg, index)
    rows = load_jsonl(data_jsonl, domain=data_jsonl.stem)
    if len(rows) < 2:
        raise DataError(f"data_jsonl {data_jsonl}: needs at least 2 examples, has {len(rows)}")
    return split_holdout(rows, cfg.chain.holdout_fraction, cfg.seed + index)
