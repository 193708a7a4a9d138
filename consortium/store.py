"""Content-addressed blob store: every blob is named by its sha256, reads verify it, writes are atomic."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

_HEX = re.compile(r"^[0-9a-f]{64}$")


class IntegrityError(RuntimeError):
    """A blob's content does not match the hash it is stored under (tampering or corruption)."""


class BlobNotFound(KeyError):
    """No blob with that hash in the store."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors serialisation; deterministic for the same tensors and metadata (keys are sorted)."""
    return st_save({k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())}, metadata)


class BlobStore:
    """A local directory of blobs `<root>/<aa>/<sha256>`; the same store the audit reads later."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        if not _HEX.match(digest):
            raise ValueError(f"blob id must be 64 lowercase hex characters (sha256), got {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store bytes under their sha256 (temp file + rename: never a half-written blob)."""
        digest = sha256_hex(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """Read a blob and refuse it unless its content hashes to its name."""
        path = self._path(digest)
        if not path.is_file():
            raise BlobNotFound(f"blob {digest} not in store {self.root}")
        data = path.read_bytes()
        found = sha256_hex(data)
        if found != digest:
            raise IntegrityError(f"blob {digest} in {self.root} is corrupt: its content hashes to {found}")
        return data

    def __contains__(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def put_tensors(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
        return self.put(tensors_to_bytes(tensors, metadata))

    def get_tensors(self, digest: str) -> dict[str, torch.Tensor]:
        return st_load(self.get(digest))
