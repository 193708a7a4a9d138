"""Content-addressed blob store: every blob is named by its sha256, reads verify it, writes are atomic.

`BlobStore` is a local directory (`blob`); `open_store` also gives an HTTP client of `consortium store
serve` (`remote`, `server`) or any fsspec filesystem with the same interface. Every backend verifies on
read in `ContentStore.get`: the bytes a store hands back hash to the name asked for, whoever served them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from consortium.store.blob import (
    BlobNotFound,
    BlobStore,
    ContentStore,
    IntegrityError,
    StoreError,
    StoreUnavailable,
    check_digest,
    is_digest,
    sha256_hex,
    tensors_metadata,
    tensors_to_bytes,
    verify,
)

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "ContentStore",
    "IntegrityError",
    "StoreError",
    "StoreUnavailable",
    "check_digest",
    "is_digest",
    "open_store",
    "sha256_hex",
    "tensors_metadata",
    "tensors_to_bytes",
    "verify",
]


def open_store(uri: str | Path, **options: object) -> ContentStore:
    """Pick a backend by scheme: a plain path or `file://` → `BlobStore`; `http(s)://` → `HttpBlobStore`
    (options: retries, backoff, timeout, max_bytes, budget); any other `scheme://` → `FsspecBlobStore`
    (options go to fsspec)."""
    if isinstance(uri, Path):
        return BlobStore(uri)
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return BlobStore(uri)
    scheme = scheme.lower()
    if scheme == "file":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{uri}: file:// URLs must name a local path (file:///abs/path)")
        return BlobStore(unquote(parsed.path))
    # requests / fsspec are optional (the `net` extra): only for a remote store
    from consortium.store.remote import FsspecBlobStore, HttpBlobStore

    if scheme in ("http", "https"):
        return HttpBlobStore(uri, **options)  # type: ignore[arg-type]
    return FsspecBlobStore(uri, **options)
