"""The frozen-prefix cache: hidden states entering the lowest adapted layer, computed once per example.

With adapters only on layers >= L (`lora.layers = "top:k"`), everything below L is the frozen base: the
hidden states entering layer L are a function of the base weights and the example's tokens alone. They
are computed once (no grad) and reused across steps, rounds and evaluation; only layers L.. run per step.

Exactness: a causal decoder's hidden states at an example's own positions do not depend on what else is
in the batch (right padding comes after them and is masked; packed neighbours are behind a
block-diagonal mask), so each example is cached on its own, keyed by its token ids, and the batch is
reassembled in the caller's layout (padded: `attention_mask`; packed: `position_ids`). Positions outside
any example (right padding) enter layer L as zeros: no real position attends to them and none is a
target. The remaining layers run through the model's *own* forward (its layer list swapped for layers
L.. and `inputs_embeds` = the cached states), so rotary embeddings, position ids and the causal/packed
mask are built exactly as in the full model. Only model types whose forward uses `inputs_embeds`
unchanged qualify (`SUPPORTED`); Gemma, for instance, scales them, and runs uncached.

Each cache carries a key (a digest of the base config and prefix weights, L, and the autocast dtype) and
refuses lookups under any other key; the runner re-checks cheap invalidators (L, the weights' in-place
version counters) on every use and starts a fresh cache when they change. The cache is plain process
memory, bounded by a byte budget (beyond it, examples are recomputed each time), never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

log = logging.getLogger(__name__)

SUPPORTED = frozenset({"llama"})  # decoder forwards checked to use inputs_embeds as given
_LAYER = re.compile(r"\.layers\.(\d+)\.")


class PrefixCacheMismatch(RuntimeError):
    """A lookup under a key (model, layer, precision) other than the one the cache was built for."""


@dataclass(frozen=True)
class PrefixKey:
    """What the cached hidden states depend on besides the tokens."""

    model: str  # digest of the base config and the prefix's weights
    layer: int  # L: the states entering this layer
    precision: str  # the autocast dtype they were computed under ("float32" = none)


class PrefixCache:
    """Token ids -> hidden states entering layer L (float32/bf16 CPU-or-device tensors, seq x hidden)."""

    def __init__(self, key: PrefixKey, budget_bytes: int) -> None:
        self.key = key
        self.budget = budget_bytes
        self.entries: dict[bytes, Tensor] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def _check(self, key: PrefixKey) -> None:
        if key != self.key:
            raise PrefixCacheMismatch(f"prefix cache built for {self.key}, asked for {key}")

    def get(self, key: PrefixKey, ids: bytes) -> Tensor | None:
        self._check(key)
        got = self.entries.get(ids)
        if got is None:
            self.misses += 1
        else:
            self.hits += 1
        return got

    def put(self, key: PrefixKey, ids: bytes, hidden: Tensor) -> bool:
        """Store unless that would exceed the budget (then the caller recomputes next time)."""
        self._check(key)
        size = hidden.numel() * hidden.element_size()
        if ids in self.entries or self.bytes + size > self.budget:
            return False
        self.entries[ids] = hidden
        self.bytes += size
        return True


def adapted_layers(model: nn.Module) -> list[int]:
    """Indices of decoder layers holding a LoRA module (sorted); [] when none is found."""
    found = {
        int(m.group(1))
        for n, mod in model.named_modules()
        if isinstance(mod, LoraLayer)
        for m in [_LAYER.search(n + ".")]
        if m
    }
    return sorted(found)


def _stamp(params: list[Tensor]) -> tuple[int, ...]:
    """In-place version counters and storage addresses: change whenever a prefix weight is written in
    place or replaced (`load_state_dict`, `.to(...)`)."""
    return (len(params), sum(p._version for p in params), hash(tuple(p.data_ptr() for p in params)))


@contextmanager
def _stack(decoder: nn.Module, layers: nn.ModuleList, norm: nn.Module | None):
    """Run `decoder`'s own forward over `layers` only (and with `norm` replaced when given)."""
    saved_layers, saved_norm = decoder.layers, decoder.norm
    decoder.layers = layers
    if norm is not None:
        decoder.norm = norm
    try:
        yield decoder
    finally:
        decoder.layers = saved_layers
        decoder.norm = saved_norm


def _segments(inputs: dict[str, Tensor]) -> list[tuple[int, int, int]] | None:
    """(row, start, end) of every example in the batch; None when the layout is not one we can rebuild."""
    ids = inputs["input_ids"]
    rows, width = ids.shape
    if "position_ids" in inputs:  # packed: a new segment wherever the positions restart
        pos = inputs["position_ids"].cpu()
        out = []
        for r in range(rows):
            starts = [0] + [t for t in range(1, width) if int(pos[r, t]) != int(pos[r, t - 1]) + 1]
            if any(int(pos[r, s]) != 0 for s in starts):
                return None
            out += [(r, s, e) for s, e in zip(starts, [*starts[1:], width], strict=True)]
        return out
    mask = inputs.get("attention_mask")
    if mask is None:
        return [(r, 0, width) for r in range(rows)]
    mask = mask.cpu()
    lengths = mask.sum(-1).tolist()
    out = []
    for r, n in enumerate(lengths):
        if n < 1 or not bool(mask[r, :n].all()):  # only right padding keeps real positions batch-free
            return None
        out.append((r, 0, int(n)))
    return out


class PrefixRunner:
    """Computes a PEFT model's decoder output with its frozen prefix read from (and written to) a cache."""

    def __init__(self, peft_model: nn.Module, budget_bytes: int) -> None:
        self.model = peft_model
        self.budget = budget_bytes
        self.causal_lm = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
        self.decoder = self.causal_lm.get_decoder()
        self.caches: dict[str, PrefixCache] = {}
        self.reason = ""
        self.layer = self._layer()
        self._fingerprint: str | None = None
        self._stamp: tuple[int, ...] = ()

    def _layer(self) -> int:
        """L, or 0 (no cache) with `reason` saying why."""
        mtype = getattr(self.causal_lm.config, "model_type", "?")
        if mtype not in SUPPORTED:
            self.reason = f"model type {mtype!r} not supported (checked: {', '.join(sorted(SUPPORTED))})"
            return 0
        layers = adapted_layers(self.model)
        if not layers:
            self.reason = "no adapted decoder layer found"
            return 0
        if layers[0] == 0:
            self.reason = "an adapter sits on layer 0 (lora.layers = 'all'): nothing frozen to cache"
        return layers[0]

    @property
    def active(self) -> bool:
        return self.layer > 0

    def _prefix_params(self) -> list[Tensor]:
        mods = [self.decoder.embed_tokens, *self.decoder.layers[: self.layer]]
        return [p for m in mods for p in m.parameters()] + list(self.decoder.rotary_emb.buffers())

    def fingerprint(self) -> str:
        """Digest of the base config and the prefix weights (computed when they change, ~1 s for 135M)."""
        params = self._prefix_params()
        stamp = (self.layer, *_stamp(params))
        if self._fingerprint is None or stamp != self._stamp:
            config = json.dumps(self.causal_lm.config.to_dict(), sort_keys=True, default=str)
            h = hashlib.sha256(config.encode())
            for p in params:  # hashed in place (no copy of the weights' bytes)
                h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy())
            self._fingerprint, self._stamp = h.hexdigest()[:16], stamp
        return self._fingerprint

    def key(self) -> PrefixKey:
        device = self.decoder.embed_tokens.weight.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        precision = str(dtype or self.decoder.embed_tokens.weight.dtype).removeprefix("torch.")
        self.layer = self._layer()
        return PrefixKey(self.fingerprint(), self.layer, precision)

    def cache(self, key: PrefixKey) -> PrefixCache:
        """The cache for `key`; a cache built under an older key (weights changed) is dropped."""
        got = self.caches.get(key.precision)
        if got is None or got.key != key:
            if got is not None:
                log.info("prefix cache: key changed (%s -> %s); starting afresh", got.key, key)
            used = sum(c.bytes for p, c in self.caches.items() if p != key.precision)
            got = self.caches[key.precision] = PrefixCache(key, max(0, self.budget - used))
        return got

    @torch.no_grad()
    def _compute(self, seqs: list[Tensor]) -> list[Tensor]:
        """Hidden states entering layer L of each token sequence (batched, right-padded, no grad)."""
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long, device=seqs[0].device)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        with _stack(self.decoder, self.decoder.layers[: self.layer], nn.Identity()) as dec:
            hidden = dec(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return [hidden[i, : len(s)].clone() for i, s in enumerate(seqs)]

    def hidden(self, inputs: dict[str, Tensor], call: Callable | None = None) -> Tensor | None:
        """The decoder's last hidden state for `inputs` (as `decoder(**inputs).last_hidden_state`), or
        None when this batch's layout cannot be served from the cache (the caller runs the full model).
        `call` runs the remaining layers instead of the decoder itself (a compiled wrapper of it)."""
        if not self.active:
            return None
        segs = _segments(inputs)
        if segs is None:
            return None
        key = self.key()
        if not self.active:
            return None
        cache = self.cache(key)
        ids = inputs["input_ids"]
        keys = [ids[r, s:e].cpu().numpy().tobytes() for r, s, e in segs]
        found: dict[bytes, Tensor] = {}
        missing: dict[bytes, Tensor] = {}
        for k, (r, s, e) in zip(keys, segs, strict=True):
            if k in found or k in missing:
                continue
            got = cache.get(key, k)
            if got is None:
                missing[k] = ids[r, s:e]
            else:
                found[k] = got
        if missing:
            for k, h in zip(missing, self._compute(list(missing.values())), strict=True):
                found[k] = h
                cache.put(key, k, h)
        first = next(iter(found.values()))
        entering = first.new_zeros((*ids.shape, first.shape[-1]))
        for k, (r, s, e) in zip(keys, segs, strict=True):
            entering[r, s:e] = found[k]
        rest = {n: inputs[n] for n in ("attention_mask", "position_ids") if n in inputs}
        with _stack(self.decoder, self.decoder.layers[self.layer :], None) as dec:
            return (call or dec)(inputs_embeds=entering, use_cache=False, **rest).last_hidden_state

    def stats(self) -> dict[str, Any]:
        """What the run report records: L, entries, bytes, hits and misses per precision."""
        return {
            "layer": self.layer,
            "budget_bytes": self.budget,
            "reason_off": self.reason or None,
            "caches": {
                p: {"entries": len(c.entries), "bytes": c.bytes, "hits": c.hits, "misses": c.misses}
                for p, c in self.caches.items()
            },
        }


_RUNNERS: weakref.WeakKeyDictionary[nn.Module, PrefixRunner] = weakref.WeakKeyDictionary()


def enable_prefix_cache(peft_model: nn.Module, budget_mb: int = 1024) -> PrefixRunner:
    """Give `peft_model` a prefix cache (kept until `disable_prefix_cache`); training and evaluation of
    this model object then read their frozen prefix from it. Idempotent."""
    runner = _RUNNERS.get(peft_model)
    if runner is None:
        runner = _RUNNERS[peft_model] = PrefixRunner(peft_model, budget_mb * 2**20)
        if not runner.active:
            log.info("prefix cache off: %s", runner.reason)
    return runner


def disable_prefix_cache(peft_model: nn.Module) -> None:
    _RUNNERS.pop(peft_model, None)


def prefix_runner(peft_model: nn.Module) -> PrefixRunner | None:
    """The model's prefix cache runner, if one was enabled and has something to cache."""
    runner = _RUNNERS.get(peft_model)
    return runner if runner is not None and runner.active else None
