"""LoRA variants behind one interface, and the adapter <-> flat float32 vector that participants exchange.

Two variants:

* ``lora`` (FedIT): A and B trained and communicated; averaging A and B separately is *not* the average of
  the products B·A (aggregation noise).
* ``ffa`` (FFA-LoRA): A frozen at a seeded random init shared by everyone, only B trained and communicated;
  averaging B is exactly averaging the updates, and traffic is halved for square projections.

One process keeps ONE base model with ONE attached adapter and swaps participants in and out with
``get_flat``/``set_flat`` (never reloading the model). Vectors are float32, 1-D, on CPU, in ``layout`` order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

Variant = Literal["lora", "ffa"]
VARIANTS: tuple[str, ...] = ("lora", "ffa")
Layout = list[tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class LoraSpec:
    """Everything that fixes an adapter's shape and initial value; identical on all participants."""

    variant: Variant = "ffa"
    r: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"LoraSpec.variant: expected one of {VARIANTS}, got {self.variant!r}")
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"LoraSpec.r: expected a positive int, got {self.r!r}")
        if not (isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"LoraSpec.alpha: expected a positive finite number, got {self.alpha!r}")
        if isinstance(self.target_modules, str) or not self.target_modules:
            got = self.target_modules
            raise ValueError(f"LoraSpec.target_modules: expected a non-empty tuple, got {got!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def scaling(self) -> float:
        """s = alpha / r, the factor PEFT applies to B·A."""
        return self.alpha / self.r


def _lora_layers(peft_model: nn.Module) -> dict[str, LoraLayer]:
    """Adapted modules by name, with the ``base_model.model.`` prefix that PEFT state-dict keys carry."""
    return {name: mod for name, mod in peft_model.named_modules() if isinstance(mod, LoraLayer)}


def _adapter_name(peft_model: nn.Module) -> str:
    """The single active adapter's name (``"default"``); several at once is not a supported setup."""
    active = getattr(peft_model, "active_adapter", "default")
    if isinstance(active, list | tuple):
        if len(active) != 1:
            raise ValueError(f"expected exactly one active adapter, got {active}")
        active = active[0]
    return str(active)


def _params(peft_model: nn.Module) -> dict[str, nn.Parameter]:
    """All LoRA weights keyed exactly as ``get_peft_model_state_dict`` names them (adapter name dropped)."""
    adapter = _adapter_name(peft_model)
    out: dict[str, nn.Parameter] = {}
    for name, layer in _lora_layers(peft_model).items():
        if adapter not in layer.lora_A:
            continue
        out[f"{name}.lora_A.weight"] = layer.lora_A[adapter].weight
        out[f"{name}.lora_B.weight"] = layer.lora_B[adapter].weight
    if not out:
        raise ValueError(f"model has no LoRA layers for adapter {adapter!r}; call attach() first")
    return out


def _communicated(key: str, spec: LoraSpec) -> bool:
    """FFA sends only B (A is shared by seed); plain LoRA sends both."""
    return spec.variant == "lora" or ".lora_B." in key


def apply_trainable(peft_model: PeftModel, spec: LoraSpec) -> None:
    """Set requires_grad for the variant: only communicated tensors train; the base stays frozen.

    PEFT's ``set_adapter``/``from_pretrained(is_trainable=True)`` re-enable A; call this again after them.
    """
    params = _params(peft_model)
    for p in peft_model.parameters():
        p.requires_grad_(False)
    for key, p in params.items():
        p.requires_grad_(_communicated(key, spec))


def attach(model: nn.Module, spec: LoraSpec) -> PeftModel:
    """Wrap ``model`` (in place) with a LoRA adapter initialised from ``spec.seed`` alone.

    The init (A Kaiming-uniform as PEFT does, B zero) runs under a forked RNG seeded with ``spec.seed``, so
    every participant with the same spec gets bit-identical A and the caller's global RNG is left untouched.
    """
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        peft_model = get_peft_model(model, config)
    params = _params(peft_model)
    with torch.no_grad():
        for key, p in params.items():
            if ".lora_B." in key:
                p.zero_()
    apply_trainable(peft_model, spec)
    peft_model.eval()
    return peft_model


def layout(peft_model: nn.Module, spec: LoraSpec) -> Layout:
    """Names and shapes of the communicated tensors, sorted by name: the meaning of every flat vector."""
    params = _params(peft_model)
    return [(k, tuple(params[k].shape)) for k in sorted(params) if _communicated(k, spec)]


def layout_size(lay: Layout) -> int:
    """Number of float32 values a vector with this layout holds."""
    return sum(math.prod(shape) for _, shape in lay)


def _check_vec(vec: Tensor, expected: int) -> None:
    """Reject anything that is not a finite 1-D float32 vector of the expected length, naming the problem."""
    if not isinstance(vec, Tensor):
        raise ValueError(f"adapter vector: expected a torch.Tensor, got {type(vec).__name__}")
    if vec.dtype != torch.float32:
        raise ValueError(f"adapter vector: expected dtype torch.float32, got {vec.dtype}")
    if vec.dim() != 1:
        raise ValueError(f"adapter vector: expected 1-D, got shape {tuple(vec.shape)}")
    if vec.numel() != expected:
        raise ValueError(f"adapter vector: expected length {expected}, got {vec.numel()}")
    if not bool(torch.isfinite(vec).all()):
        bad = int((~torch.isfinite(vec)).sum())
        raise ValueError(f"adapter vector: expected finite values, got {bad} non-finite (NaN/inf)")


def state_to_flat(state: dict[str, Tensor], lay: Layout) -> Tensor:
    """Concatenate ``state`` in layout order into one float32 CPU vector (checks names and shapes)."""
    parts = []
    for key, shape in lay:
        if key not in state:
            raise ValueError(f"adapter state: missing tensor {key!r}")
        t = state[key]
        if tuple(t.shape) != shape:
            raise ValueError(f"adapter state: {key!r} expected shape {shape}, got {tuple(t.shape)}")
        parts.append(t.detach().to(device="cpu", dtype=torch.float32).reshape(-1))
    extra = set(state) - {k for k, _ in lay}
    if extra:
        raise ValueError(f"adapter state: unexpected tensors {sorted(extra)[:3]}")
    return torch.cat(parts).contiguous() if parts else torch.zeros(0, dtype=torch.float32)


def flat_to_state(vec: Tensor, lay: Layout) -> dict[str, Tensor]:
    """Split a flat vector into named tensors (fresh contiguous copies, safe to save with safetensors)."""
    _check_vec(vec, layout_size(lay))
    out: dict[str, Tensor] = {}
    offset = 0
    for key, shape in lay:
        n = math.prod(shape)
        out[key] = vec[offset : offset + n].reshape(shape).clone().contiguous()
        offset += n
    return out


def get_flat(peft_model: nn.Module, spec: LoraSpec) -> Tensor:
    """The communicated tensors as one float32, 1-D, contiguous CPU vector (a copy)."""
    params = _params(peft_model)
    lay = layout(peft_model, spec)
    return state_to_flat({k: params[k] for k, _ in lay}, lay).clone()


def set_flat(peft_model: nn.Module, spec: LoraSpec, vec: Tensor) -> None:
    """Load a communicated vector into the attached adapter, in place (bit-exact for float32 adapters)."""
    params = _params(peft_model)
    lay = layout(peft_model, spec)
    state = flat_to_state(vec, lay)
    with torch.no_grad():
        for key, t in state.items():
            params[key].copy_(t)


# Swapping participants in one process is just saving and loading the communicated vector.
snapshot = get_flat
restore = set_flat


def full_state(peft_model: nn.Module) -> dict[str, Tensor]:
    """All LoRA tensors (A included), as detached CPU copies keyed like ``get_peft_model_state_dict``."""
    return {k: p.detach().to("cpu").clone().contiguous() for k, p in sorted(_params(peft_model).items())}


def adapted_modules(peft_model_or_state: nn.Module | dict[str, Tensor]) -> list[str]:
    """Names of adapted modules (state-dict key prefixes before ``.lora_A.weight``), sorted."""
    state = peft_model_or_state if isinstance(peft_model_or_state, dict) else _params(peft_model_or_state)
    return sorted(k[: -len(".lora_A.weight")] for k in state if k.endswith(".lora_A.weight"))


def effective_delta(
    peft_model_or_state: nn.Module | dict[str, Tensor], spec: LoraSpec, module: str
) -> Tensor:
    """The weight update s·B·A that the adapter adds to ``module`` (float32, CPU).

    ``module`` is a name from ``adapted_modules``; a dict argument must hold both A and B (``full_state``).
    """
    state = peft_model_or_state if isinstance(peft_model_or_state, dict) else _params(peft_model_or_state)
    a_key, b_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
    if a_key not in state or b_key not in state:
        raise ValueError(f"effective_delta: no LoRA A/B for module {module!r}")
    a = state[a_key].detach().to("cpu", torch.float32)
    b = state[b_key].detach().to("cpu", torch.float32)
    return spec.scaling * (b @ a)
