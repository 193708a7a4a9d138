"""Local training: response-only loss equals the HF loss, batches are length-bucketed, runs repeat."""

import random

import pytest
import torch

from consortium.data import build_corpus, encode_example
from consortium.model import LoraSpec, attach, get_flat, load_base
from consortium.train import IGNORE, LocalTrainer, TrainParams, bucketed_batches, collate, response_loss

SPEC = LoraSpec(variant="ffa", r=4, alpha=8.0)


@pytest.fixture(scope="module")
def setup():
    base, tok = load_base("tiny")
    model = attach(base, SPEC)
    corpus = build_corpus(["arithmetic", "strings"], 16, 2, seed=0)
    encoded = [encode_example(tok, e, 96) for e in corpus.train]
    return model, tok, encoded


def test_response_loss_matches_hf_labels_loss(setup) -> None:
    model, tok, encoded = setup
    batch = collate(encoded[:6], tok.pad_token_id)
    ours = response_loss(model, batch)
    hf = model(**batch).loss
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-6)


def test_collate_masks_padding_and_prompt(setup) -> None:
    _, tok, encoded = setup
    batch = collate(encoded[:4], tok.pad_token_id)
    lengths = [len(e.input_ids) for e in encoded[:4]]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    first = encoded[0]
    assert batch["labels"][0, : len(first.labels)].tolist() == first.labels


def test_bucketed_batches_cover_data_and_group_lengths(setup) -> None:
    _, _, encoded = setup
    batches = list(bucketed_batches(encoded, 4, 8, random.Random(0), bucket=8))
    assert len(batches) == 8 and all(len(b) == 4 for b in batches)
    assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in encoded)  # one epoch, each once
    padded = sum(max(len(e.input_ids) for e in b) * len(b) for b in batches)
    rng = random.Random(0)
    shuffled = rng.sample(encoded, len(encoded))
    naive = sum(max(len(e.input_ids) for e in shuffled[i : i + 4]) * 4 for i in range(0, 32, 4))
    assert padded <= naive
    with pytest.raises(ValueError, match="no training examples"):
        next(bucketed_batches([], 4, 1, random.Random(0)))


def test_training_lowers_loss_and_is_deterministic(setup) -> None:
    model, tok, encoded = setup
    trainer = LocalTrainer(model, SPEC, tok.pad_token_id)
    start = get_flat(model, SPEC)
    params = TrainParams(steps=12, batch_size=8, lr=5e-2)
    a = trainer.train(start, encoded, params, seed=1)
    b = trainer.train(start, encoded, params, seed=1)
    c = trainer.train(start, encoded, params, seed=2)
    assert torch.equal(a.delta, b.delta) and a.losses == b.losses
    assert not torch.equal(a.delta, c.delta)
    assert sum(a.losses[-3:]) / 3 < sum(a.losses[:3]) / 3
    replay = bucketed_batches(encoded, 8, 12, random.Random(1))
    assert a.tokens == sum(len(e.input_ids) for batch in replay for e in batch)
