"""Local LoRA fine-tuning of one participant: seeded, length-bucketed batches, loss on responses only.

The base model is loaded once per process with one adapter attached; participants are swapped in by
writing their starting vector into the adapter (`set_flat`), never by reloading the model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from peft import PeftModel

from consortium.batches import IGNORE, bucketed_batches, collate
from consortium.data import EncodedExample
from consortium.model import LoraSpec, get_flat, set_flat
from consortium.model.prefix import enable_prefix_cache, prefix_runner
from consortium.packing import collate_packed
from consortium.train_fast import (
    CompiledDecoder,
    autocast,
    make_optimizer,
    resolve_precision,
    response_ce_sum,
)


@dataclass(frozen=True)
class TrainParams:
    """The knobs of local training (a plain mirror of the config's `train` section)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # fast paths (docs/speed.md); the defaults reproduce the plain loop bit for bit on CPU
    packing: bool = False  # lay each batch's examples end to end (same loss, no padding)
    pack_len: int = 0  # tokens per packed row; 0 = the batch's longest example (flash attention: one row)
    compile: bool = False  # torch.compile the decoder (CUDA; skipped on CPU unless compile_backend is set)
    compile_backend: str | None = None
    fused_optimizer: bool = True  # AdamW fused=True on CUDA, foreach=True on CPU (bit-identical there)
    bf16: bool = False  # bf16 autocast on CUDA; ignored on CPU (older flag: see precision)
    loss_chunk: int = 0  # response positions per chunk of the vocabulary projection; 0 = all at once
    gradient_checkpointing: bool = False  # recompute layer activations in backward (memory for speed)
    precision: str = "fp32"  # autocast: "fp32", "auto" (bf16 where native: CUDA, avx512_bf16/AMX) or "bf16"
    prefix_cache: bool = False  # cache the frozen layers below the lowest adapter (model/prefix.py)
    prefix_cache_mb: int = 1024  # that cache's memory budget; beyond it examples are recomputed
    threads: int | None = None  # torch.set_num_threads for the training; None = leave as is
    attention: str | None = None  # "eager" or "sdpa"; None = the model's own (docs/speed.md: eager on CPU)


@dataclass
class LocalResult:
    """What one participant's local training produced: the update (delta) and how it went."""

    delta: torch.Tensor
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    snapshots: list[torch.Tensor] = field(default_factory=list)  # delta every k steps (probe step level)
    precision: str = "fp32"  # what the steps autocast to ("bf16" or "fp32")


def response_loss(
    model: PeftModel, batch: dict[str, torch.Tensor], chunk: int = 0, decoder: Callable | None = None
) -> torch.Tensor:
    """Mean next-token loss over response tokens, projecting only those positions to the vocabulary.

    Same value as the HF `labels=` loss, but the full-vocabulary logits of prompt and padding tokens
    (most of a short-answer batch) are never computed: on SmolLM2 the LM head is ~20% of a forward.
    `batch` is padded (`attention_mask`) or packed (`position_ids`, no mask: consortium.packing);
    `chunk > 0` bounds the logits alive at once (`train_fast.response_ce_sum`); `decoder` replaces the
    model's decoder call (a compiled one).
    """
    causal_lm = model.get_base_model()
    hidden = decoder_hidden(model, batch, decoder)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    head = causal_lm.get_output_embeddings()
    if chunk > 0:
        return response_ce_sum(head, hidden[:, :-1][keep], targets[keep], chunk) / keep.sum()
    logits = head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def decoder_hidden(model: torch.nn.Module, batch: dict[str, torch.Tensor], decoder: Callable | None = None):
    """The decoder's last hidden state for a padded or packed batch: from the model's frozen-prefix cache
    when one is enabled (`consortium.model.prefix`), otherwise by `decoder` (default: the model's own)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    runner = prefix_runner(model)
    if runner is not None:
        hidden = runner.hidden(inputs, decoder)
        if hidden is not None:
            return hidden
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return (decoder or causal_lm.get_decoder())(**inputs, use_cache=False).last_hidden_state


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def speed_settings(model: torch.nn.Module, params: TrainParams) -> dict:
    """What the run report records about how local training ran: precision, threads, compile, cache."""
    device = next(model.parameters()).device
    runner = prefix_runner(model)
    return {
        "precision": resolve_precision(params.precision, params.bf16, device),
        "precision_setting": params.precision,
        "threads": torch.get_num_threads(),
        "attention": _causal_lm(model).config._attn_implementation,
        "compile": params.compile and (device.type == "cuda" or params.compile_backend is not None),
        "prefix_cache": runner.stats() if runner is not None else None,
    }


def prepare_model(model: torch.nn.Module, params: TrainParams) -> None:
    """Process-wide settings before any training or evaluation: torch threads, the attention
    implementation and the prefix cache."""
    if params.threads:
        torch.set_num_threads(params.threads)
    if params.attention and _causal_lm(model).config._attn_implementation != params.attention:
        _causal_lm(model).set_attn_implementation(params.attention)
    if params.prefix_cache:
        enable_prefix_cache(model, params.prefix_cache_mb)


def set_checkpointing(causal_lm: torch.nn.Module, on: bool) -> None:
    """Switch activation checkpointing (non-reentrant) on or off, leaving no input-grad hook behind."""
    if on and not causal_lm.is_activation_checkpointing:
        causal_lm.activation_checkpointing_enable({"use_reentrant": False})
    elif not on and causal_lm.is_activation_checkpointing:
        causal_lm.activation_checkpointing_disable()
        causal_lm.disable_input_require_grads()


class LocalTrainer:
    """Trains the one attached adapter for any participant, starting from a given global vector."""

    def __init__(self, model: PeftModel, spec: LoraSpec, pad_id: int) -> None:
        self.model = model
        self.spec = spec
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self._decoders: dict[tuple[bool, str | None], CompiledDecoder] = {}

    def decoder(self, params: TrainParams) -> CompiledDecoder:
        """The decoder call for these params; compiled ones are kept so a process compiles once."""
        key = (params.compile, params.compile_backend)
        if key not in self._decoders:
            dec = self.model.get_base_model().get_decoder()
            self._decoders[key] = CompiledDecoder(dec, self.device, params.compile, params.compile_backend)
        return self._decoders[key]

    def inputs(self, batch: Sequence[EncodedExample], params: TrainParams) -> dict[str, torch.Tensor]:
        """The batch as tensors on the device: padded, or packed when `params.packing`."""
        if params.packing:
            flash = "flash" in str(self.model.get_base_model().config._attn_implementation)
            budget = None if flash else params.pack_len
            multiple = 64 if params.compile and self.device.type == "cuda" and not flash else 1
            tensors = collate_packed(batch, self.pad_id, budget, multiple)
        else:
            tensors = collate(batch, self.pad_id)
        return {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}

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
        prepare_model(self.model, params)
        bf16 = resolve_precision(params.precision, params.bf16, self.device) == "bf16"
        set_flat(self.model, self.spec, start)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        opt = make_optimizer(trainable, params.lr, params.weight_decay, params.fused_optimizer, self.device)
        decoder = self.decoder(params)
        causal_lm = self.model.get_base_model()
        set_checkpointing(causal_lm, params.gradient_checkpointing)
        rng = random.Random(seed)
        result = LocalResult(delta=torch.empty(0), precision="bf16" if bf16 else "fp32")
        t0 = time.perf_counter()
        self.model.train()
        try:
            for batch in bucketed_batches(examples, params.batch_size, params.steps, rng):
                inputs = self.inputs(batch, params)
                with autocast(self.device, bf16):
                    loss = response_loss(self.model, inputs, params.loss_chunk, decoder)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                result.losses.append(float(loss.detach()))
                result.tokens += sum(len(e.input_ids) for e in batch)
                if snapshot_every and len(result.losses) % snapshot_every == 0:
                    result.snapshots.append(get_flat(self.model, self.spec) - start)
        finally:
            self.model.eval()
            set_checkpointing(causal_lm, False)  # leave the shared model as we found it
        result.seconds = time.perf_counter() - t0
        result.delta = get_flat(self.model, self.spec) - start
        return result
