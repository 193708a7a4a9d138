"""The fast paths of local training, each with the CPU behaviour it falls back to.

* `make_optimizer`: AdamW with `fused=True` on CUDA (one kernel for all LoRA tensors) and `foreach=True`
  on CPU (bit-identical to the per-tensor loop there, measured in tests).
* `resolve_precision` / `autocast`: bf16 autocast where the device does bf16 natively (CUDA with bf16,
  CPUs with avx512_bf16 or AMX: 2.1x the fp32 matmul rate on the 2-core EPYC); fp32 elsewhere, where
  emulated bf16 would be slower. Weights, adapter, optimizer state and the update stay float32.
* `CompiledDecoder`: `torch.compile` (inductor) of the decoder stack on CUDA. On CPU it is skipped
  unless a backend is named: whether the compile repays itself within a demo-length run is measured
  in bench/results/train_throughput_cpu.md. Any compile failure falls back to eager with a warning
  rather than failing the round.
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


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (x86 avx512_bf16 or AMX; Linux /proc/cpuinfo flags).
    Elsewhere torch emulates bf16 matmuls, which is slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 autocast pays on `device`."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def resolve_precision(precision: str, legacy_bf16: bool, device: torch.device) -> str:
    """Either "bf16" or "fp32": what local training autocasts to. `precision` is "fp32", "auto" (bf16 where
    native) or "bf16" (forced); the older `bf16 = true` flag still means bf16 on CUDA only."""
    if precision not in ("fp32", "auto", "bf16"):
        raise ValueError(f"precision: expected 'fp32', 'auto' or 'bf16', got {precision!r}")
    if precision == "bf16" or (precision == "auto" and bf16_native(device)):
        return "bf16"
    if legacy_bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` (CUDA or CPU) when `bf16`; otherwise nothing changes."""
    if bf16 and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class CompiledDecoder:
    """Calls `decoder` through `torch.compile` where that is enabled, and eagerly otherwise.

    `backend=None` compiles with inductor on CUDA only; a named backend ("inductor" on CPU, or
    "aot_eager", which tests use to check that the packed forward traces without inductor's C++ build)
    is used on any device.
    """

    def __init__(
        self, decoder: nn.Module, device: torch.device, enabled: bool, backend: str | Callable | None = None
    ):
        self.decoder = decoder
        self.active = enabled and (backend is not None or device.type == "cuda")
        self.fell_back: str | None = None
        if enabled and not self.active:
            log.info(
                "torch.compile skipped on %s (does not repay its compile time; docs/speed.md)", device.type
            )
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
