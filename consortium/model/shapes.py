"""Random-init Llama models of real shapes (1B, 8B) for throughput and memory-fit runs on a GPU.

Only the shape matters for speed and memory, so no weights are downloaded. `lora_memory_estimate` is the
analytic side of the 8B fit check: it is what a CPU box reports instead of allocating the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Llama-3.2-1B, Llama-3.1-8B and SmolLM2-135M shapes; "llama-mini" is the same code path, small
# enough for a CPU test.
SHAPES: dict[str, dict] = {
    "llama-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "smollm2-135m": dict(  # the demo's model: its real LoRA layout without loading the GGUF
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "llama-mini": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=4096,
        tie_word_embeddings=True,
    ),
}


def shape_config(name: str) -> LlamaConfig:
    """The LlamaConfig of a named shape (a clear error for unknown names)."""
    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}; expected one of {sorted(SHAPES)}")
    return LlamaConfig(
        **SHAPES[name], max_position_embeddings=8192, rope_theta=500_000.0, bos_token_id=1, eos_token_id=2
    )


def n_params(cfg: LlamaConfig) -> int:
    """Parameter count of a Llama config, computed (no allocation)."""
    h, i, v, n = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    return n * layer + v * h * (1 if cfg.tie_word_embeddings else 2) + h


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by component for LoRA fine-tuning of a frozen base; rough upper bounds (see `total`)."""

    weights: int
    lora_state: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        """Sum plus 10% for the CUDA context, allocator fragmentation and workspaces."""
        return int((self.weights + self.lora_state + self.activations + self.logits) * 1.1)


def lora_memory_estimate(
    cfg: LlamaConfig,
    tokens: int,
    response_tokens: int,
    weight_bytes: int = 2,
    lora_r: int = 16,
    lora_targets: int = 4,
    checkpointing: bool = False,
    loss_chunk: int = 0,
) -> MemoryEstimate:
    """Peak memory of one LoRA training step, analytically.

    Activations: per layer and token, the tensors autograd keeps for a bf16 Llama block with a fused
    attention kernel (no score matrix): about 10h + 3kv + 4i values (norm inputs/outputs, q/k/v and their
    rotated copies, attention output, the MLP's gate/up/act/product). That over-counts a frozen base
    (a frozen linear's input is not needed for its own backward) so it is an upper bound. Checkpointing
    keeps one h-vector per layer and token plus one layer's full set during recompute. Logits: response
    positions x vocab in the compute dtype, their float32 copy and its gradient (chunked: `loss_chunk` rows).
    """
    h, i, v, n = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer_token = (10 * h + 3 * kv + 4 * i) * weight_bytes
    if checkpointing:
        activations = tokens * (n * h * weight_bytes + per_layer_token)
    else:
        activations = tokens * n * per_layer_token
    rows = min(response_tokens, loss_chunk) if loss_chunk > 0 else response_tokens
    logits = rows * v * (weight_bytes + 4 + 4)
    lora_params = n * lora_targets * lora_r * 2 * h  # r x (in + out), square-ish projections
    return MemoryEstimate(
        weights=n_params(cfg) * weight_bytes,
        lora_state=lora_params * 16,  # fp32 param, grad, two AdamW moments
        activations=activations,
        logits=logits,
    )


def build_shape(name: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LlamaForCausalLM:
    """A random-init Llama of the named shape, allocated directly on `device` in `dtype`.

    Refuses shapes whose weights alone would take more than half of this machine's RAM when asked to build
    them on the CPU (an 8B model on a laptop-sized box), with the analytic estimate as the alternative.
    """
    cfg = shape_config(name)
    need = n_params(cfg) * torch.empty((), dtype=dtype).element_size()
    if device.type == "cpu":
        ram = psutil.virtual_memory().total
        if need > ram // 2:
            raise MemoryError(
                f"shape {name!r} needs {need / 2**30:.1f} GiB of weights in {dtype}; this CPU box has "
                f"{ram / 2**30:.1f} GiB RAM. Run it on a GPU, or use the analytic estimate (--estimate-only)."
            )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.config.pad_token_id = 0
    return model.eval()
