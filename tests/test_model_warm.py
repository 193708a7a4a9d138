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


def test_a_run_writes_its_caches_under_consortium_cache_only(tmp_path: Path, monkeypatch) -> None:
    """`CONSORTIUM_CACHE` is the one cache setting: with it set, nothing lands in ~/.cache/consortium."""
    import os
    import shutil

    from rich.console import Console

    from consortium.config import load_config
    from consortium.model.base import cache_root
    from consortium.sim import Simulation

    cache, home = tmp_path / "cache", tmp_path / "home"
    home.mkdir()
    shared = os.environ.get("CONSORTIUM_CACHE")
    if shared and (Path(shared) / WARM_NAME).is_dir():  # reuse the session's warm-up instead of repeating it
        shutil.copytree(Path(shared) / WARM_NAME, cache / WARM_NAME)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CONSORTIUM_CACHE", str(cache))
    assert cache_root() == cache
    cfg = load_config(
        preset="smoke",
        overrides=["model.name=tiny-warm", "rounds=1", "data.n_train=8", "data.n_test=2"],
    )
    Simulation(cfg, Console(quiet=True)).run(tmp_path / "runs", plots=False)
    assert (cache / WARM_NAME).is_dir() and any((cache / WARM_NAME).iterdir())
    assert not (home / ".cache" / "consortium").exists()
