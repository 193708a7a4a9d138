"""The fast paths of local training, each with the CPU behaviour it falls back to.

* `make_optimizer`: AdamW with `fused=True` on CUDA (one kernel for all LoRA tensors) and `foreach=True`
  on CPU (bit-identical to the per-tensor loop there, measured in tests).
* `autocast`: bf16 autocast on CUDA; a no-op on CPU (CPU bf16 matmuls are slower on common cores and
  would change the CPU results the tests pin).
* `CompiledDecoder`: `torch.compile` of the decoder stack on CUDA. On CPU it is skipped unless a
  backend is forced: inductor took ~200 s to compile the tiny model on the shared 2-core box, longer
  than a whole local round, although steady state was faster (bench/results/train_throughput_cpu.md).
  Any compile failure falls back to eager with a warning rather than failing the round.
* `response_ce_sum`: cross-entropy summed over response positions, optionally in chunks whose logits are
  recomputed in backward (`torch.utils.checkpoint`), so at most `chunk x vocab` logits are alive at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)


def make_optimizer(
    params: Iterable[nn.Parameter], lr: float, weight_decay: float, fused: bool, device: torch.device
) -> torch.optim.AdamW:
    """AdamW; `fused` picks the fastest multi-tensor implementation the device has."""
    params = list(params)
    if not fused:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if device.type == "cuda":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked (and supported); otherwise nothing changes."""
    if bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class CompiledDecoder:
    """Calls `decoder` through `torch.compile` where that is enabled, and eagerly otherwise.

    `backend=None` compiles with inductor on CUDA only; a named backend (e.g. "aot_eager", which tests use
    to check that the packed forward traces without inductor's C++ build) is used on any device.
    """

    def __init__(
        self, decoder: nn.Module, device: torch.device, enabled: bool, backend: str | Callable | None = None
    ):
        self.decoder = decoder
        self.active = enabled and (backend is not None or device.type == "cuda")
        self.fell_back: str | None = None
        if enabled and not self.active:
            log.info("torch.compile skipped on %s (compile time exceeds a round; docs/speed.md)", device.type)
        self._compiled: Callable | None = (
            torch.compile(decoder, backend=backend or "inductor", dynamic=None) if self.active else None
        )

    def __call__(self, **inputs: torch.Tensor):
        if self._compiled is not None:
            try:
                return self._compiled(**inputs)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:  # a compiler/toolchain problem must not fail local training
                root = e.__cause__ or e  # dynamo wraps the backend's own error
                self.fell_back = f"{type(e).__name__} ({type(root).__name__}: {root})"
                log.warning("torch.compile failed (%s); training eagerly", self.fell_back)
                self._compiled = None
                self.active = False
        return self.decoder(**inputs)


def response_ce_sum(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 0
) -> torch.Tensor:
    """Sum of next-token cross-entropies of `hidden` (n x d, response positions only) against `targets`.

    With `chunk > 0` the head and the loss run on `chunk` rows at a time and each chunk's logits are
    recomputed in backward instead of stored: peak logit memory is chunk x vocab instead of n x vocab.
    """

    def ce(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(head(h).float(), t, reduction="sum")

    if chunk <= 0 or hidden.shape[0] <= chunk:
        return ce(hidden, targets)
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk):
        total = total + checkpoint(ce, hidden[s : s + chunk], targets[s : s + chunk], use_reentrant=False)
    return total
