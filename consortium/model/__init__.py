"""Base model loading, LoRA variants, adapter <-> flat vector, PEFT export."""

from consortium.model.base import ModelLoadError, cache_root, load_base, load_smollm2, smollm2_gguf_path
from consortium.model.export import export_peft
from consortium.model.lora import (
    Layout,
    LoraSpec,
    adapted_modules,
    apply_trainable,
    attach,
    effective_delta,
    full_state,
    get_flat,
    layout,
    restore,
    set_flat,
    snapshot,
)
from consortium.vector import flat_to_state, layout_size, state_to_flat  # the exchange format, shared

__all__ = [
    "Layout",
    "LoraSpec",
    "ModelLoadError",
    "adapted_modules",
    "apply_trainable",
    "attach",
    "cache_root",
    "effective_delta",
    "export_peft",
    "flat_to_state",
    "full_state",
    "get_flat",
    "layout",
    "layout_size",
    "load_base",
    "load_smollm2",
    "restore",
    "set_flat",
    "smollm2_gguf_path",
    "snapshot",
    "state_to_flat",
]
