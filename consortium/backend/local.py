"""The backend interface (`Trainer`, `Backend`, `BackendError`, `submit`) and the in-process backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from consortium.train import LocalResult, LocalTrainer, TrainParams

if TYPE_CHECKING:
    from peft import PeftModel

    from consortium.data import EncodedExample
    from consortium.model import LoraSpec


class BackendError(RuntimeError):
    """The selected backend cannot run: Ray missing, its cluster unreachable or too small."""


class Trainer(Protocol):
    """What the simulation trains with: `LocalTrainer.train`, wherever it runs."""

    def train(
        self,
        start: torch.Tensor,
        examples: Sequence[EncodedExample],
        params: TrainParams,
        seed: int,
        snapshot_every: int = 0,
    ) -> LocalResult: ...


class Backend(Protocol):
    def trainer(self, model: PeftModel, spec: LoraSpec, pad_id: int) -> Trainer: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class InProcess:
    """Train on the driver's own model, one participant after the other (the reference run)."""

    def trainer(self, model: PeftModel, spec: LoraSpec, pad_id: int) -> Trainer:
        return LocalTrainer(model, spec, pad_id)

    def describe(self) -> dict[str, Any]:
        return {"kind": "inprocess", "threads": torch.get_num_threads()}

    def close(self) -> None:
        pass


def submit(trainer: Trainer, calls: Sequence[tuple[Any, ...]]) -> None:
    """Start `trainer.train(*call)` for every call now, where the trainer can (Ray); a no-op in process."""
    ahead = getattr(trainer, "submit", None)
    if ahead is not None:
        for call in calls:
            ahead(*call)
