"""One participant's model, local training and held-out loss, built from the run config alone.

A real node (`consortium node`) is a `LocalParticipant`: it trains honestly on its own shard and adds
its distributed-DP noise share from an OS-random seed. The simulation keeps its own driver loop
(attackers, probe evidence, Ray) but shares the data split, the seeds, the DP share and the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from consortium.data import EncodedExample, Example, encode_example
from consortium.evaluate import heldout_loss
from consortium.local.privacy import dp_share
from consortium.local.seeds import local_seed, private_noise_seed
from consortium.model import LoraSpec, attach, get_flat, layout, load_base, set_flat
from consortium.train import LocalTrainer, TrainParams

if TYPE_CHECKING:
    from peft import PeftModel

    from consortium.config import RunConfig
    from consortium.model import Layout

LossFn = Callable[[torch.Tensor], float]


def heldout_loss_fn(
    model: PeftModel, spec: LoraSpec, holdout: Sequence[EncodedExample], pad_id: int, batch_size: int
) -> LossFn:
    """A voter's held-out loss of an adapter vector (its own data, never trained on)."""

    def loss(vec: torch.Tensor) -> float:
        set_flat(model, spec, vec)
        return heldout_loss(model, holdout, pad_id, batch_size)

    return loss


class LocalModel:
    """The run's base model with its adapter attached, as every participant builds it from the config
    (so its initial adapter, the genesis, is the same everywhere)."""

    def __init__(self, cfg: RunConfig, spec: LoraSpec) -> None:
        self.cfg, self.spec = cfg, spec
        dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float32
        base, self.tokenizer = load_base(cfg.model.name, dtype=dtype, seed=cfg.seed)
        self.model = attach(base, spec)
        self.layout: Layout = layout(self.model, spec)
        self.initial = get_flat(self.model, spec)
        self.trainer = LocalTrainer(self.model, spec, self.tokenizer.pad_token_id)

    def encode(self, examples: Sequence[Example]) -> list[EncodedExample]:
        c = self.cfg
        return [encode_example(self.tokenizer, e, c.train.max_len, c.data.system_prompt) for e in examples]


@dataclass
class LocalParticipant:
    """Participant `index` of the run: its encoded shard and held-out set on a shared `LocalModel`."""

    model: LocalModel
    index: int
    params: TrainParams  # the run's local training (`consortium.local.params.train_params`)
    examples: list[Example]
    holdout: list[Example]

    def __post_init__(self) -> None:
        self.encoded = self.model.encode(self.examples)
        self.encoded_holdout = self.model.encode(self.holdout)

    def train(self, rnd: int, start: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Round `rnd`'s update from the global vector `start` (0-based round, as the simulation counts)
        and the sample count it claims. Its noise share is seeded by the OS: nobody can recompute it."""
        cfg = self.model.cfg
        seed = local_seed(cfg.seed, rnd, self.index)
        res = self.model.trainer.train(start, self.encoded, self.params, seed)
        return dp_share(res.delta, cfg, private_noise_seed()), len(self.examples)

    def loss(self) -> LossFn:
        """This participant's held-out loss of an adapter vector (what it votes by)."""
        m = self.model
        pad = m.tokenizer.pad_token_id
        return heldout_loss_fn(m.model, m.spec, self.encoded_holdout, pad, m.cfg.eval.batch_size)
