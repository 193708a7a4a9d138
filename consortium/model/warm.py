"""A tiny Llama warmed up in-process on the built-in corpus, so that small experiments learn something.

A random-init tiny model cannot be LoRA-tuned into anything: its tied embeddings are so small that no
adapter reaches a confident logit, so every metric stays at zero. A few hundred full-parameter steps on
the built-in domains fix that in about a minute on two cores. The result is cached (safetensors) under
the Consortium cache and is deterministic for a given seed. The warm-up corpus uses its own seed, so it
may share a few questions with a run's test set (like pre-training data would); use it for robustness
and mechanics experiments, not for claims about generalisation.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from consortium.batches import bucketed_batches, collate
from consortium.data import build_corpus, encode_example
from consortium.model.tiny import build_tiny_llama, build_tiny_tokenizer

WARM_NAME = "tiny-warm"
WARM_STEPS = 600
_FORMAT = 1
_SHAPE = {"hidden": 128, "layers": 2, "heads": 4}
# the domains it was warmed on, pinned: a domain added later must not change (or stale) the cached model
WARM_DOMAINS = ("arithmetic", "dates", "policy", "strings", "units")


def _train(seed: int, steps: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = build_tiny_tokenizer()
    model = build_tiny_llama(len(tok), seed=seed, **_SHAPE)
    corpus = build_corpus(list(WARM_DOMAINS), 300, 1, 10_000 + seed)
    encoded = [encode_example(tok, e, 128, "You are a concise assistant.") for e in corpus.train]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
        model.train()
        for batch in bucketed_batches(encoded, 32, steps, random.Random(seed)):
            loss = model(**collate(batch, tok.pad_token_id)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    return model.eval(), tok


def load_tiny_warm(
    cache: Path, seed: int = 0, steps: int = WARM_STEPS
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The warmed-up tiny model: from the cache, or trained and cached atomically on first use."""
    entry = cache / WARM_NAME / f"v{_FORMAT}-seed{seed}-steps{steps}"
    if not (entry / "config.json").is_file():
        model, _ = _train(seed, steps)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tmp.chmod(0o755)
            try:
                os.replace(tmp, entry)
            except OSError:
                if not (entry / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoModelForCausalLM.from_pretrained(entry), build_tiny_tokenizer()
