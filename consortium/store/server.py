"""`consortium store serve`: an HTTP blob server over a `BlobStore` directory.

PUT /blobs/<sha256> stores a body only if it hashes to its name and stays under the size limit
(streamed to a temp file, hashed as it arrives, renamed into place: nothing partial is ever visible);
GET/HEAD re-verify the blob before serving it. Clients verify again on their side: the server is a
convenience, not a party anyone has to trust."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consortium.store.blob import BlobNotFound, BlobStore, IntegrityError, is_digest
from consortium.store.listen import bind
from consortium.store.remote import CORRUPT_HEADER, MAX_BLOB_BYTES

DEFAULT_MAX_BYTES = MAX_BLOB_BYTES


class _TooLarge(Exception):
    pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def make_app(root: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Starlette:
    """The ASGI app serving the blob directory `root` (created if missing)."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    store = BlobStore(root)

    async def index(request: Request) -> Response:
        return JSONResponse({"blobs": "/blobs/{sha256}", "max_bytes": max_bytes})

    async def put_blob(request: Request) -> Response:
        digest = request.path_params["digest"]
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error(400, f"bad Content-Length {length!r}")
            if int(length) > max_bytes:
                return _error(413, f"blob of {int(length):,} bytes is over the limit of {max_bytes:,} bytes")
        fd, name = tempfile.mkstemp(dir=store.root, prefix=".tmp-")
        tmp = Path(name)
        try:
            h, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_bytes:
                        raise _TooLarge
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            found = h.hexdigest()
            if found != digest:
                tmp.unlink()
                return _error(400, f"content hashes to {found}, not to its name {digest}")
            created = await run_in_threadpool(store.install, tmp, digest)
        except _TooLarge:
            tmp.unlink(missing_ok=True)
            return _error(413, f"blob is over the limit of {max_bytes:,} bytes")
        except BaseException:  # client gone, disk full, cancelled: leave nothing behind
            tmp.unlink(missing_ok=True)
            raise
        return JSONResponse({"blob": digest, "bytes": size}, status_code=201 if created else 200)

    async def get_blob(request: Request) -> Response:
        digest = request.path_params["digest"]
        try:
            data = await run_in_threadpool(store.get, digest)  # re-verifies the hash
        except BlobNotFound:
            return _error(404, f"blob {digest} not in this store")
        except IntegrityError as e:
            return _error(500, f"refusing to serve: {e}", {CORRUPT_HEADER: "corrupt"})
        return Response(data, media_type="application/octet-stream", headers={"ETag": f'"{digest}"'})

    async def blob(request: Request) -> Response:
        digest = request.path_params["digest"]
        if not is_digest(digest):
            return _error(400, f"blob name must be 64 lowercase hex characters (sha256), got {digest!r}")
        if request.method == "PUT":
            try:
                return await put_blob(request)
            except ClientDisconnect:
                return Response(status_code=400)
        return await get_blob(request)  # GET and HEAD (Starlette drops the body for HEAD)

    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/blobs/{digest:path}", blob, methods=["GET", "HEAD", "PUT"]),
        ]
    )


def serve(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 8700,
    max_bytes: int = DEFAULT_MAX_BYTES,
    on_ready: Callable[[str], None] = print,
) -> None:
    """Bind first (so port 0 works and the printed URL is the real one), then run uvicorn until stopped."""
    import uvicorn  # optional (the net extra): only `store serve` needs it

    app = make_app(root, max_bytes)
    sock, url = bind(host, port)
    try:
        on_ready(url)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
