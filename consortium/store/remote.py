"""Store clients for blobs that live elsewhere: an HTTP blob server (`consortium store serve`) or any
fsspec filesystem. Both are `ContentStore`s, so `get` verifies every blob against its name: the server
or bucket is not trusted, a client never returns bytes that do not hash to what it asked for."""

from __future__ import annotations

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
)

CORRUPT_HEADER = "X-Blob-Error"  # the server sets it to "corrupt" when a stored blob fails its own check
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # the server's own limit (store.server.DEFAULT_MAX_BYTES)
ERROR_BODY_BYTES = 4096  # of an error answer, only this much is read (for its one-line reason)


def _load(r: requests.Response, limit: int, what: str, truncate: bool = False) -> bytes:
    """Read a streamed body, at most `limit` bytes: an untrusted server cannot make a client hold an
    unbounded body in memory. Over the limit: StoreError, or (`truncate`) the first `limit` bytes."""
    chunks, size = [], 0
    for chunk in r.iter_content(65536):
        size += len(chunk)
        if size > limit:
            r.close()
            if truncate:
                chunks.append(chunk[: limit - (size - len(chunk))])
                break
            raise StoreError(f"{what}: the answer is over the limit of {limit:,} bytes (max_bytes)")
        chunks.append(chunk)
    r._content = b"".join(chunks)  # what .content, .text and .json() read from now on
    return r._content


class HttpBlobStore(ContentStore):
    """Client of a `consortium store serve` server at `url` (e.g. http://10.0.0.5:8700).

    Connection errors, timeouts and 5xx answers are retried `retries` times with exponential backoff
    (`backoff`, 2·backoff, 4·backoff, … seconds, capped at `max_delay`); a PUT is safe to repeat since
    blobs are named by content. 4xx answers are final. After the last retry: `StoreUnavailable`.
    A blob answer over `max_bytes` is refused (StoreError) without being read whole."""

    def __init__(
        self,
        url: str,
        retries: int = 4,
        backoff: float = 0.25,
        timeout: float = 60.0,
        max_delay: float = 8.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError(f"retries and backoff must be >= 0, got retries={retries}, backoff={backoff}")
        self.url = url.rstrip("/")
        self.location = self.url
        self.retries, self.backoff, self.timeout, self.max_delay = retries, backoff, timeout, max_delay
        self.max_bytes = max_bytes
        self.session = requests.Session()

    def _blob_url(self, digest: str) -> str:
        return f"{self.url}/blobs/{digest}"

    def _request(self, method: str, digest: str, data: bytes | None = None) -> requests.Response:
        """One call with retries; answers < 500 (and the server's "corrupt" 500) come back as they are."""
        url = self._blob_url(digest)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_delay))
            try:
                r = self.session.request(method, url, data=data, timeout=self.timeout, stream=True)
                ok = r.status_code == 200 and method == "GET"
                limit = self.max_bytes if ok else ERROR_BODY_BYTES
                _load(r, limit, f"{method} {url}", truncate=not ok)
            except requests.RequestException as e:  # refused, reset, timed out, DNS
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code < 500 or r.headers.get(CORRUPT_HEADER) == "corrupt":
                return r
            last = f"HTTP {r.status_code}: {_detail(r)}"
        raise StoreUnavailable(
            f"{method} {url} failed after {self.retries + 1} attempt(s) (blob {digest}); last error: {last}"
        )

    def _write(self, digest: str, data: bytes) -> None:
        r = self._request("PUT", digest, data)
        if r.status_code in (200, 201):
            return
        if r.status_code == 413:
            raise StoreError(f"store {self.url} refused blob {digest} ({len(data):,} bytes): {_detail(r)}")
        raise StoreError(f"store {self.url} refused blob {digest}: HTTP {r.status_code}: {_detail(r)}")

    def _read(self, digest: str) -> bytes:
        r = self._request("GET", digest)
        self._raise_for(r, digest)
        return r.content

    def _has(self, digest: str) -> bool:
        r = self._request("HEAD", digest)
        if r.status_code == 404:
            return False
        self._raise_for(r, digest)
        return True

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
    """The server's one-line reason (JSON `error` field), else the start of the body."""
    try:
        return str(r.json()["error"])
    except Exception:
        return (r.text or r.reason or "").strip()[:200] or "(no body)"


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
        if self.fs.exists(path):
            return
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def _read(self, digest: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(digest))
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not in store {self.location}") from None

    def _has(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(digest)))
