"""Model shapes for GPU runs: parameter counts match real models, the CPU refuses an 8B build, and the
memory estimate says an 8B LoRA step fits in 80 GB only with checkpointing at 16 x 1024."""

import pytest
import torch

from consortium.model.shapes import build_shape, lora_memory_estimate, n_params, shape_config


def test_param_counts_match_models() -> None:
    mini = build_shape("llama-mini", torch.device("cpu"), torch.float32)
    assert n_params(mini.config) == sum(p.numel() for p in mini.parameters())
    assert n_params(shape_config("llama-1b")) == pytest.approx(1.236e9, rel=0.01)  # Llama-3.2-1B
    assert n_params(shape_config("llama-8b")) == pytest.approx(8.03e9, rel=0.01)  # Llama-3.1-8B
    with pytest.raises(ValueError, match="unknown model shape 'llama-70b'"):
        shape_config("llama-70b")


def test_8b_is_refused_on_cpu() -> None:
    with pytest.raises(MemoryError, match=r"llama-8b.*Run it on a GPU"):
        build_shape("llama-8b", torch.device("cpu"), torch.bfloat16)


def test_8b_lora_memory_estimate() -> None:
    cfg = shape_config("llama-8b")
    tokens = 16 * 1024
    plain = lora_memory_estimate(cfg, tokens, tokens // 2)
    fit = lora_memory_estimate(cfg, tokens, tokens // 2, checkpointing=True, loss_chunk=1024)
    assert plain.weights == pytest.approx(16.06e9, rel=0.01)
    assert plain.total > 80e9  # all activations kept: does not fit one 80 GB card
    assert fit.total < 40e9  # checkpointing + chunked loss: fits with room to spare
    assert fit.logits * 8 == plain.logits
