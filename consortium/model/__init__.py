"""Base model loading, LoRA variants, adapter <-> flat vector, PEFT export."""
