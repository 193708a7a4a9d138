"""The warmed-up tiny model: trained once, cached atomically, loaded bit-identically, and it learned."""

from pathlib import Path

import torch

from consortium.data import build_corpus, encode_example
from consortium.model.tiny import build_tiny_llama
from consortium.model.warm import WARM_NAME, load_tiny_warm
from consortium.train import collate


def _loss(model, tok) -> float:
    ex = build_corpus(["policy", "units"], 16, 1, 3).train
    batch = collate(
        [encode_example(tok, e, 128, "You are a concise assistant.") for e in ex], tok.pad_token_id
    )
    with torch.no_grad():
        return float(model(**batch).loss)


def test_warm_model_is_cached_and_reloads_identically(tmp_path: Path) -> None:
    first, tok = load_tiny_warm(tmp_path, seed=0, steps=10)
    (entry,) = (tmp_path / WARM_NAME).iterdir()
    assert entry.name == "v1-seed0-steps10" and (entry / "model.safetensors").is_file()
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    mtime = (entry / "model.safetensors").stat().st_mtime_ns
    again, _ = load_tiny_warm(tmp_path, seed=0, steps=10)
    assert (entry / "model.safetensors").stat().st_mtime_ns == mtime  # loaded, not retrained
    for (n, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    random_init = build_tiny_llama(len(tok), seed=0, hidden=128, layers=2, heads=4)
    assert _loss(first, tok) < _loss(random_init, tok) - 0.5  # 10 steps already cut the loss
