"""Write the global adapter in standard PEFT format so anyone can use it without Consortium.

``PeftModel.from_pretrained(base, out_dir)`` loads the result and reproduces our in-memory logits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from peft import PeftModel

from consortium.model.lora import peft_state_dict


def export_peft(
    peft_model: PeftModel,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Save ``adapter_config.json`` + ``adapter_model.safetensors`` to ``out_dir`` atomically.

    Written to a temp dir beside ``out_dir`` and renamed into place, so a crash never leaves a half adapter.
    An existing non-empty ``out_dir`` is refused unless ``overwrite=True``. ``base_model_name_or_path``
    defaults to the name ``load_base`` gave the model (e.g. ``HuggingFaceTB/SmolLM2-135M-Instruct``).
    A Fed-SB adapter is written as a standard one: lora_A = R·A0, lora_B = B0 (same outputs).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"export_peft: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"export_peft: {out} is not empty; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    adapter = peft_model.active_adapter
    config = peft_model.peft_config[adapter]
    old_name = config.base_model_name_or_path
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = base_model_name_or_path
    elif not old_name:
        config.base_model_name_or_path = getattr(peft_model.get_base_model().config, "_name_or_path", None)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        folded = peft_state_dict(peft_model)
        extra = {} if folded is None else {"state_dict": folded}
        peft_model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False, **extra)
        if out.is_dir():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, trash / "old")  # directory renames are atomic; the old copy goes only after
            try:
                os.replace(tmp, out)
            except OSError:
                os.replace(trash / "old", out)
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        config.base_model_name_or_path = old_name
        shutil.rmtree(tmp, ignore_errors=True)
    return out
