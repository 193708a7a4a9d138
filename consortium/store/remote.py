"""Store clients for blobs that live elsewhere: an HTTP blob server (`consortium store serve`) or any
fsspec filesystem. Both are `ContentStore`s, so `get` verifies every blob against its name: the server
or bucket is not trusted, a client never returns bytes that do not hash to what it asked for."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from consortium.store.blob import (
    BlobNotFound,
    ContentStore,
    IntegrityError,
    StoreError,
    StoreUnavailable,
    check_digest,
    sha256_hex,
)

CORRUPT_HEADER = "X-Blob-Error"  # the server sets it to "corrupt" when a stored blob fails its own check
MAX_BLOB_BYTES = 256 * 1024 * 1024  # the largest blob a server stores and a client reads
_MAX_ERROR_BYTES = 64 * 1024  # an error answer's body is read this far, never further


class HttpBlobStore(ContentStore):
    """Client of a `consortium store serve` server at `url` (e.g. http://10.0.0.5:8700).

    Connection errors, timeouts and 5xx answers are retried `retries` times with exponential backoff
    (`backoff`, 2·backoff, 4·backoff, … seconds, capped at `max_delay`); a PUT is safe to repeat since
    blobs are named by content. 4xx answers are final. After the last retry: `StoreUnavailable`.
    Bodies are streamed and read to at most `max_bytes` (an error's to 64 KiB): a server cannot make
    the client hold more than that, whatever it sends. `budget` (seconds, None: none) bounds one call
    with all its retries: a caller with a deadline (a voter's window) hears `StoreUnavailable` in time
    to act on what the chain says next, instead of retrying a slow store past it."""

    def __init__(
        self,
        url: str,
        retries: int = 4,
        backoff: float = 0.25,
        timeout: float = 60.0,
        max_delay: float = 8.0,
        max_bytes: int = MAX_BLOB_BYTES,
        budget: float | None = None,
    ) -> None:
        if retries < 0 or backoff < 0 or max_bytes <= 0 or (budget is not None and budget <= 0):
            raise ValueError(
                f"retries and backoff must be >= 0, max_bytes and budget > 0, got retries={retries}, "
                f"backoff={backoff}, max_bytes={max_bytes}, budget={budget}"
            )
        self.url = url.rstrip("/")
        self.location = self.url
        self.retries, self.backoff, self.timeout, self.max_delay = retries, backoff, timeout, max_delay
        self.max_bytes, self.budget = max_bytes, budget
        self.session = requests.Session()

    def _blob_url(self, digest: str) -> str:
        return f"{self.url}/blobs/{digest}"

    def _request(self, method: str, digest: str, data: bytes | None = None) -> requests.Response:
        """One call with retries; answers < 500 (and the server's "corrupt" 500) come back as they are."""
        url = self._blob_url(digest)
        last = ""
        end = None if self.budget is None else time.monotonic() + self.budget
        made = 0
        for attempt in range(self.retries + 1):
            timeout = self.timeout
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_delay)
                if end is not None and time.monotonic() + delay >= end:
                    break
                time.sleep(delay)
            if end is not None:
                timeout = min(timeout, max(end - time.monotonic(), 0.001))
            made += 1
            try:
                r = self.session.request(method, url, data=data, timeout=timeout, stream=True)
            except requests.RequestException as e:  # refused, reset, timed out, DNS
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code < 500 or r.headers.get(CORRUPT_HEADER) == "corrupt":
                return r
            last = f"HTTP {r.status_code}: {_detail(r)}"
            r.close()
        within = "" if end is None else f" within its budget of {self.budget:g}s"
        raise StoreUnavailable(
            f"{method} {url} failed after {made} attempt(s){within} (blob {digest}); last error: {last}"
        )

    def _write(self, digest: str, data: bytes) -> None:
        r = self._request("PUT", digest, data)
        if r.status_code in (200, 201):
            r.close()
            return
        if r.status_code == 413:
            raise StoreError(f"store {self.url} refused blob {digest} ({len(data):,} bytes): {_detail(r)}")
        raise StoreError(f"store {self.url} refused blob {digest}: HTTP {r.status_code}: {_detail(r)}")

    def _read(self, digest: str) -> bytes:
        r = self._request("GET", digest)
        try:
            self._raise_for(r, digest)
            return self._bounded(r, digest)
        finally:
            r.close()

    def _bounded(self, r: requests.Response, digest: str) -> bytes:
        """The body, refused (StoreError) as soon as it is longer than `max_bytes`."""
        over = StoreError(f"GET {r.url} (blob {digest}): the body is over {self.max_bytes:,} bytes")
        length = r.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_bytes:
            raise over
        body = bytearray()
        for chunk in r.iter_content(1 << 16):
            body += chunk
            if len(body) > self.max_bytes:
                raise over
        return bytes(body)

    def _has(self, digest: str) -> bool:
        r = self._request("HEAD", digest)
        try:
            if r.status_code == 404:
                return False
            self._raise_for(r, digest)
            return True
        finally:
            r.close()

    def _raise_for(self, r: requests.Response, digest: str) -> None:
        if r.status_code == 200:
            return
        if r.status_code == 404:
            raise BlobNotFound(f"blob {digest} not in store {self.url}")
        if r.headers.get(CORRUPT_HEADER) == "corrupt":
            raise IntegrityError(
                f"blob {digest} in {self.url} is corrupt (reported by the server): {_detail(r)}"
            )
        raise StoreError(f"{r.request.method} {r.url} (blob {digest}): HTTP {r.status_code}: {_detail(r)}")


def _detail(r: requests.Response) -> str:
    """The server's one-line reason (JSON `error` field), else the start of the body (read to 64 KiB)."""
    try:
        body = r.raw.read(_MAX_ERROR_BYTES, decode_content=True) if r.raw is not None else b""
    except Exception:
        body = b""
    try:
        return str(json.loads(body)["error"])
    except Exception:
        return (body.decode("utf-8", "replace") or r.reason or "").strip()[:200] or "(no body)"


class FsspecBlobStore(ContentStore):
    """Blobs `<url>/<aa>/<sha256>` on any fsspec filesystem (memory://, s3://, gcs://, …).

    Writes go straight to the final name: object stores make a PUT visible whole or not at all (a
    torn write on a plain filesystem would still be caught by verify-on-read). Retries are the
    backend's own (s3fs, gcsfs retry transient errors)."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec  # optional (the net extra): only an fsspec URL needs it

        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")
        self.location = url

    def _path(self, digest: str) -> str:
        return f"{self.root}/{digest[:2]}/{check_digest(digest)}"

    def _write(self, digest: str, data: bytes) -> None:
        path = self._path(digest)
        if self.fs.exists(path) and sha256_hex(self.fs.cat_file(path)) == digest:
            return  # intact; a corrupt copy is overwritten (a re-upload repairs it)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def _read(self, digest: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(digest))
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not in store {self.location}") from None

    def _has(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(digest)))
