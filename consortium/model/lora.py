"""LoRA variants behind one interface, and the adapter <-> flat float32 vector that participants exchange.

Four variants (docs/lora_variants.md has the maths and the bytes on the wire):

* ``lora`` (FedIT): A and B trained and communicated; averaging A and B separately is *not* the average of
  the products B·A (aggregation noise).
* ``ffa`` (FFA-LoRA): A frozen at a seeded random init shared by everyone, only B trained and communicated;
  averaging B is exactly averaging the updates, and traffic is halved for square projections.
* ``flora`` (FLoRA): trained and communicated like ``lora``; the aggregation differs (the exact sum of the
  products, re-projected to rank r; ``consortium.aggregate_lora``).
* ``fedsb`` (Fed-SB): the update is B0·R·A0 with A0, B0 fixed (seeded, orthonormal) and only the r×r matrix
  R trained and communicated: averaging R is exactly averaging the updates, r² values per module.

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
from torch.nn.utils import parametrize

from consortium.vector import Layout, flat_to_state, state_to_flat

Variant = Literal["lora", "ffa", "flora", "fedsb"]
VARIANTS: tuple[str, ...] = ("lora", "ffa", "flora", "fedsb")


@dataclass(frozen=True)
class LoraSpec:
    """Everything that fixes an adapter's shape and initial value; identical on all participants."""

    variant: Variant = "ffa"
    r: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0
    layers: str | tuple[int, ...] = "all"  # "all", "top:k" or decoder-layer indices (docs/speed.md)

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
        object.__setattr__(self, "layers", check_layers(self.layers))

    @property
    def scaling(self) -> float:
        """s = alpha / r, the factor PEFT applies to B·A."""
        return self.alpha / self.r


def check_layers(layers: object) -> str | tuple[int, ...]:
    """Validate a `layers` choice: "all", "top:k" (k >= 1) or distinct non-negative layer indices (sorted)."""
    if layers == "all":
        return "all"
    if isinstance(layers, str):
        k = layers.removeprefix("top:")
        if layers.startswith("top:") and k.isdigit() and int(k) >= 1:
            return f"top:{int(k)}"
        raise ValueError(
            f"LoraSpec.layers: expected 'all', 'top:k' (k >= 1) or a list of indices, got {layers!r}"
        )
    if isinstance(layers, list | tuple) and layers:
        ok = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)
        if ok and len(set(layers)) == len(layers):
            return tuple(sorted(layers))
    raise ValueError(
        f"LoraSpec.layers: expected 'all', 'top:k' or distinct non-negative indices, got {layers!r}"
    )


def layer_indices(layers: str | tuple[int, ...], n_layers: int) -> list[int] | None:
    """The decoder layers that get adapters (None = all), for a model with `n_layers` layers."""
    layers = check_layers(layers)
    if layers == "all":
        return None
    if isinstance(layers, str):
        k = int(layers.removeprefix("top:"))
        if k > n_layers:
            raise ValueError(f"LoraSpec.layers: {layers!r} asks for more layers than the model's {n_layers}")
        return list(range(n_layers - k, n_layers))
    if max(layers) >= n_layers:
        raise ValueError(f"LoraSpec.layers: index {max(layers)} out of range for a {n_layers}-layer model")
    return list(layers)


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


class FoldR(nn.Module):
    """Fed-SB's down-projection as a parametrization of ``lora_A.weight``: weight = R · A0.

    The parametrized Linear keeps PEFT's forward, merge and ``get_delta_weight`` working unchanged; its
    trainable original is the r×r matrix R, while A0 (r × in, orthonormal rows) is a fixed buffer.
    """

    def __init__(self, a0: Tensor) -> None:
        super().__init__()
        self.register_buffer("a0", a0)

    def forward(self, r: Tensor) -> Tensor:
        return r @ self.a0

    def right_inverse(self, weight: Tensor) -> Tensor:
        """R with R·A0 = weight, exact when weight's rows lie in A0's row space (A0 has orthonormal rows)."""
        return weight @ self.a0.T


def _sb_fold(lin: nn.Module) -> FoldR | None:
    """The FoldR parametrization of a ``lora_A`` Linear, if it is a Fed-SB one."""
    plist = getattr(getattr(lin, "parametrizations", None), "weight", None)
    if plist is None:
        return None
    return next((m for m in plist if isinstance(m, FoldR)), None)


def _params(peft_model: nn.Module) -> dict[str, nn.Parameter]:
    """All raw LoRA parameters keyed like ``get_peft_model_state_dict`` names them (adapter name dropped).

    A Fed-SB module has ``{name}.lora_R.weight`` (the r×r R) instead of ``lora_A`` (A0 is a buffer).
    """
    adapter = _adapter_name(peft_model)
    out: dict[str, nn.Parameter] = {}
    for name, layer in _lora_layers(peft_model).items():
        if adapter not in layer.lora_A:
            continue
        lin_a = layer.lora_A[adapter]
        if _sb_fold(lin_a) is not None:
            out[f"{name}.lora_R.weight"] = lin_a.parametrizations.weight.original
        else:
            out[f"{name}.lora_A.weight"] = lin_a.weight
        out[f"{name}.lora_B.weight"] = layer.lora_B[adapter].weight
    if not out:
        raise ValueError(f"model has no LoRA layers for adapter {adapter!r}; call attach() first")
    return out


def _factors(peft_model: nn.Module) -> dict[str, Tensor]:
    """The effective A and B of every module (Fed-SB's A = R·A0 computed), standard PEFT key names."""
    adapter = _adapter_name(peft_model)
    out: dict[str, Tensor] = {}
    for name, layer in _lora_layers(peft_model).items():
        if adapter in layer.lora_A:
            out[f"{name}.lora_A.weight"] = layer.lora_A[adapter].weight
            out[f"{name}.lora_B.weight"] = layer.lora_B[adapter].weight
    if not out:
        raise ValueError(f"model has no LoRA layers for adapter {adapter!r}; call attach() first")
    return out


def _communicated(key: str, spec: LoraSpec) -> bool:
    """FFA sends only B (A is shared by seed); Fed-SB only R; plain LoRA and FLoRA send A and B."""
    if spec.variant == "ffa":
        return ".lora_B." in key
    if spec.variant == "fedsb":
        return ".lora_R." in key
    return True


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
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    chosen = None
    if spec.layers != "all":
        if n_layers is None:
            raise ValueError("LoraSpec.layers: this model has no config.num_hidden_layers; use 'all'")
        chosen = layer_indices(spec.layers, n_layers)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,
        task_type="CAUSAL_LM",
        layers_to_transform=chosen,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        peft_model = get_peft_model(model, config)
    if spec.variant == "fedsb":
        _attach_sb(peft_model, spec)
    else:
        params = _params(peft_model)
        with torch.no_grad():
            for key, p in params.items():
                if ".lora_B." in key:
                    p.zero_()
    apply_trainable(peft_model, spec)
    peft_model.eval()
    return peft_model


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> Tensor:
    """A seeded rows×cols float32 matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    tall = rows >= cols
    g = torch.randn((rows, cols) if tall else (cols, rows), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, 1.0)  # unique QR: diag(R) > 0
    return (q if tall else q.T).to(torch.float32).contiguous()


def _attach_sb(peft_model: PeftModel, spec: LoraSpec) -> None:
    """Fed-SB: fixed A0 (orthonormal rows) and B0 (orthonormal columns) drawn from ``spec.seed`` module by
    module in name order, and a trainable r×r R = 0 (so the model starts at the base, and the gradient
    B0ᵀ·G·A0ᵀ of R is non-zero). With orthonormal factors ||B0·R·A0||_F = ||R||_F."""
    gen = torch.Generator().manual_seed(spec.seed)
    adapter = _adapter_name(peft_model)
    for _, layer in sorted(_lora_layers(peft_model).items()):
        if adapter not in layer.lora_A:
            continue
        lin_a, lin_b = layer.lora_A[adapter], layer.lora_B[adapter]
        r, fan_in = lin_a.weight.shape
        fan_out = lin_b.weight.shape[0]
        if r > min(fan_in, fan_out):
            raise ValueError(f"LoraSpec.r: fedsb needs r <= min(in, out) = {min(fan_in, fan_out)}, got {r}")
        a0 = _orthonormal(r, fan_in, gen).to(lin_a.weight.device, lin_a.weight.dtype)
        b0 = _orthonormal(fan_out, r, gen).to(lin_b.weight.device)
        with torch.no_grad():
            lin_b.weight.copy_(b0)
            lin_a.weight.zero_()
        parametrize.register_parametrization(lin_a, "weight", FoldR(a0), unsafe=True)


def peft_state_dict(peft_model: nn.Module) -> dict[str, Tensor] | None:
    """For a Fed-SB model, its full state dict with every R·A0 folded into a plain ``lora_A...weight``
    (what ``save_pretrained(state_dict=...)`` needs to write a standard adapter); None for other variants."""
    folds = {
        f"{name}.": _sb_fold(mod) for name, mod in peft_model.named_modules() if _sb_fold(mod) is not None
    }
    if not folds:
        return None
    state = dict(peft_model.state_dict())
    for prefix in folds:
        lin = peft_model.get_submodule(prefix[:-1])
        for key in [k for k in state if k.startswith(prefix + "parametrizations.")]:
            del state[key]
        state[prefix + "weight"] = lin.weight.detach().clone()
    return state


def layout(peft_model: nn.Module, spec: LoraSpec) -> Layout:
    """Names and shapes of the communicated tensors, sorted by name: the meaning of every flat vector."""
    params = _params(peft_model)
    return [(k, tuple(params[k].shape)) for k in sorted(params) if _communicated(k, spec)]


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
    """All LoRA tensors (A included; Fed-SB's A = R·A0), detached CPU copies keyed like PEFT's state dict."""
    with torch.no_grad():
        return {k: p.detach().to("cpu").clone().contiguous() for k, p in sorted(_factors(peft_model).items())}


def adapted_modules(peft_model_or_state: nn.Module | dict[str, Tensor]) -> list[str]:
    """Names of adapted modules (state-dict key prefixes before ``.lora_A.weight``), sorted."""
    state = peft_model_or_state if isinstance(peft_model_or_state, dict) else _factors(peft_model_or_state)
    return sorted(k[: -len(".lora_A.weight")] for k in state if k.endswith(".lora_A.weight"))


def effective_delta(
    peft_model_or_state: nn.Module | dict[str, Tensor], spec: LoraSpec, module: str
) -> Tensor:
    """The weight update s·B·A that the adapter adds to ``module`` (float32, CPU).

    ``module`` is a name from ``adapted_modules``; a dict argument must hold both A and B (``full_state``).
    """
    state = peft_model_or_state if isinstance(peft_model_or_state, dict) else _factors(peft_model_or_state)
    a_key, b_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
    if a_key not in state or b_key not in state:
        raise ValueError(f"effective_delta: no LoRA A/B for module {module!r}")
    a = state[a_key].detach().to("cpu", torch.float32)
    b = state[b_key].detach().to("cpu", torch.float32)
    return spec.scaling * (b @ a)
