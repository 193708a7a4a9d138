"""A blob of the run's content-addressed store, described for the page: present or not, size, hash
checked, the tensors its safetensors header lists, and where the run refers to it. Read-only: the
store's own `BlobStore` creates its directory, so the path is built here."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

MAX_HEADER = 1 << 24  # a safetensors header larger than this is not one we wrote


def blob_path(root: Path, digest: str) -> Path:
    """Where `BlobStore(root / "store")` keeps a blob: store/<first two hex>/<sha256>."""
    return root / "store" / digest[:2] / digest


def blob_info(root: Path, digest: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """What the page shows for one blob hash (the caller has checked `is_digest`)."""
    path = blob_path(root, digest)
    info: dict[str, Any] = {"hash": digest, "present": path.is_file(), "uses": blob_uses(digest, rounds)}
    if not info["present"]:
        return info
    data = path.read_bytes()
    info["bytes"] = len(data)
    info["hash_ok"] = hashlib.sha256(data).hexdigest() == digest
    info["file"] = f"store/{digest[:2]}/{digest}"
    info |= safetensors_header(data)
    return info


def safetensors_header(data: bytes) -> dict[str, Any]:
    """Tensor names, dtypes and shapes and the metadata from a safetensors header (the format: 8-byte
    little-endian header length, then that many bytes of JSON); {"format": ...} says when it is not one."""
    if len(data) < 8:
        return {"format": "not safetensors (shorter than 8 bytes)"}
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER, len(data) - 8):
        return {"format": "not safetensors (header length out of range)"}
    try:
        header = json.loads(data[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"format": "not safetensors (header is not JSON)"}
    if not isinstance(header, dict):
        return {"format": "not safetensors (header is not an object)"}
    meta = header.pop("__metadata__", None) or {}
    tensors = {
        k: {"dtype": v.get("dtype"), "shape": v.get("shape")}
        for k, v in header.items()
        if isinstance(v, dict)
    }
    return {"format": "safetensors", "metadata": meta, "tensors": tensors}


def blob_uses(digest: str, rounds: list[dict[str, Any]]) -> list[str]:
    """Every place a finished round names the hash: global in/out, an update, a candidate."""
    uses = []
    for d in rounds:
        n = d["round"]
        if d.get("global_in") == digest:
            uses.append(f"round {n}: global model in")
        if d.get("global_out") == digest:
            uses.append(f"round {n}: global model out")
        uses += [
            f"round {n}: update of {c.get('participant')}"
            for c in d["commitments"]
            if c.get("blob") == digest
        ]
        uses += [
            f"round {n}: candidate {c.get('number')} posted by {c.get('poster')}"
            for c in d["candidates"]
            if c.get("hash") == digest
        ]
    return uses
