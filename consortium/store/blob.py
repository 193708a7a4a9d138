"""Content-addressed blobs: every blob is named by its sha256, reads verify it, writes are atomic.
`ContentStore` is the interface every backend shares; `BlobStore` is a local directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

# `$` would also match before a trailing newline: blob ids are checked with fullmatch (is_digest)
_HEX = re.compile(r"[0-9a-f]{64}")


class IntegrityError(RuntimeError):
    """A blob's content does not match the hash it is stored under (tampering or corruption)."""


class BlobNotFound(KeyError):
    """No blob with that hash in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(RuntimeError):
    """The store refused a request (e.g. a blob over its size limit); retrying will not help."""


class StoreUnavailable(StoreError):
    """The store could not be reached, or kept failing, after every retry (not evidence a blob is missing)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(value: object) -> bool:
    """Whether `value` is a blob id: exactly 64 lowercase hex characters, nothing before or after."""
    return isinstance(value, str) and _HEX.fullmatch(value) is not None


def check_digest(digest: str) -> str:
    """A blob id is 64 lowercase hex characters; anything else (paths, URLs) is refused before use."""
    if not is_digest(digest):
        raise ValueError(f"blob id must be 64 lowercase hex characters (sha256), got {digest!r}")
    return digest


def verify(digest: str, data: bytes, where: str) -> bytes:
    """The one verify-on-read check every backend shares: refuse bytes that do not hash to their name."""
    found = sha256_hex(data)
    if found != digest:
        raise IntegrityError(f"blob {digest} in {where} is corrupt: its content hashes to {found}")
    return data


def file_digest(path: Path) -> str:
    """The sha256 of a file, streamed (hashlib reads it in pieces, without holding it in memory)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors serialisation; deterministic for the same tensors and metadata (keys are sorted)."""
    return st_save({k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())}, metadata)


def tensors_metadata(data: bytes) -> dict[str, str]:
    """The string metadata `tensors_to_bytes` wrote into a safetensors blob (from its JSON header)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__") or {}


class ContentStore:
    """What every backend shares: hashing on put, verification on get, safetensors helpers.

    A backend implements `_write` (store bytes already known to hash to `digest`), `_read` (raise
    `BlobNotFound` when absent) and `_has`; `location` names it in error messages."""

    location: str = "?"

    def _write(self, digest: str, data: bytes) -> None:
        raise NotImplementedError

    def _read(self, digest: str) -> bytes:
        raise NotImplementedError

    def _has(self, digest: str) -> bool:
        raise NotImplementedError

    def put(self, data: bytes) -> str:
        """Store bytes under their sha256 (idempotent) and return the name."""
        digest = sha256_hex(data)
        self._write(digest, data)
        return digest

    def get(self, digest: str) -> bytes:
        """Read a blob and refuse it unless its content hashes to its name."""
        check_digest(digest)
        return verify(digest, self._read(digest), self.location)

    def __contains__(self, digest: str) -> bool:
        return self._has(check_digest(digest))

    def put_tensors(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
        return self.put(tensors_to_bytes(tensors, metadata))

    def get_tensors(self, digest: str) -> dict[str, torch.Tensor]:
        return st_load(self.get(digest))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


class BlobStore(ContentStore):
    """A local directory of blobs `<root>/<aa>/<sha256>`; the same store the audit reads later."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / check_digest(digest)

    def _intact(self, path: Path, digest: str) -> bool:
        """Whether a stored file holds what its name says: a corrupt one is replaced by the next put of
        the right bytes (a re-upload repairs it), an intact one is kept."""
        return path.is_file() and file_digest(path) == digest

    def _write(self, digest: str, data: bytes) -> None:
        """Temp file + rename: never a half-written blob; a corrupt stored copy is replaced."""
        path = self._path(digest)
        if self._intact(path, digest):
            return
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

    def install(self, tmp: Path, digest: str) -> bool:
        """Move a fully written temp file (in this store's root, content already hashed by the caller to
        `digest`) into place; False when an intact copy was already there (the temp file is then
        removed). A corrupt stored copy is replaced."""
        path = self._path(digest)
        if self._intact(path, digest):
            tmp.unlink(missing_ok=True)
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        return True

    def _read(self, digest: str) -> bytes:
        path = self._path(digest)
        if not path.is_file():
            raise BlobNotFound(f"blob {digest} not in store {self.root}")
        return path.read_bytes()

    def _has(self, digest: str) -> bool:
        return self._path(digest).is_file()
