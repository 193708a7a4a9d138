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
    flat_to_state,
    full_state,
    get_flat,
    layout,
    layout_size,
    restore,
    set_flat,
    snapshot,
    state_to_flat,
)

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
