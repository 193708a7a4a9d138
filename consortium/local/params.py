"""The run config's training knobs as the trainer and the adapter take them: the same for the node, each
simulated participant, the probe's sample collection and FLTrust's root update."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from consortium.model import LoraSpec
from consortium.train import TrainParams

if TYPE_CHECKING:
    from consortium.config import RunConfig


def lora_spec(cfg: RunConfig) -> LoraSpec:
    """The adapter every participant attaches (shape and initial value), from the config's `lora` table."""
    return LoraSpec(**cfg.lora.model_dump())


def train_params(cfg: RunConfig, steps: int) -> TrainParams:
    """Local training of `steps` steps with the config's `train` table (its speed flags included)."""
    t = cfg.train
    return TrainParams(
        steps=steps,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        grad_clip=t.grad_clip,
        packing=t.packing,
        pack_len=t.pack_len,
        compile=t.compile,
        fused_optimizer=t.fused_optimizer,
        bf16=t.bf16,
        loss_chunk=t.loss_chunk,
        gradient_checkpointing=t.gradient_checkpointing,
        precision=t.precision,
        prefix_cache=t.prefix_cache,
        prefix_cache_mb=t.prefix_cache_mb,
        threads=t.threads,
        attention=t.attention,
    )


def shadow_params(cfg: RunConfig) -> TrainParams:
    """The shadow branch's training: the config's batch and clipping, its own fixed lr and step count."""
    base = train_params(cfg, cfg.probe.shadow_steps or cfg.train.local_steps)
    return dataclasses.replace(base, lr=cfg.probe.shadow_lr)  # the speed flags too
