"""The dashboard's ASGI app: one page, its static files and read-only JSON endpoints over a run directory.

GET  /                      the page (polls /api/state; re-renders only when the run's files change)
GET  /api/state?since=V     the whole view (`state.build_state`), or {"unchanged": true} when still V
GET  /api/records/{kind}    raw records for the table view: rounds | txlog | log  (?offset=&limit=)
GET  /api/blob/{sha256}     a store blob described: present, size, hash checked, tensors, where used
GET  /files/{path}          a final file inside the run directory, as it is (nothing outside, no dot-files)
Nothing here writes anywhere; every script and style is served from the package (no network).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .audit_once import AuditOnce
from .blobs import DIGEST, blob_info
from .rundir_view import fingerprint, read_sources, safe_child
from .state import build_state

STATIC = Path(__file__).parent / "static"
NO_CACHE = {"Cache-Control": "no-store"}
MAX_LIMIT = 5000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_CACHE)


class StateCache:
    """The last state built, rebuilt only when the run's files change; new problems go to the terminal."""

    def __init__(self, root: Path, warn: Callable[[str], None], audit: AuditOnce | None = None) -> None:
        self.root, self.warn, self.audit = root, warn, audit
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._told: set[str] = set()

    def _version(self) -> str:
        return fingerprint(self.root) + (f"-{self.audit.tag}" if self.audit else "")

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._state is None or self._state["version"] != self._version():
                version = self._version()
                self._state = build_state(self.root)
                if self.audit is not None and self._state["audit"] is None:
                    self._state["audit"] = self.audit.poll((self._state["run"] or {}).get("status"))
                self._state["version"] = version
                for p in self._state["problems"]:
                    if p not in self._told:
                        self.warn(f"{self.root}: {p}")
                self._told = set(self._state["problems"])
            return self._state


def _stderr(line: str) -> None:
    print(f"dashboard: {line}", file=sys.stderr, flush=True)


def make_app(run_dir: Path, warn: Callable[[str], None] = _stderr, audit: bool = False) -> Starlette:
    """The app for one run directory (resolved here; it may not hold a report yet); with `audit`, the
    run is audited once it is complete and the page shows the verdict."""
    root = run_dir.resolve()
    cache = StateCache(root, warn, AuditOnce(root) if audit else None)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_CACHE)

    async def state(request: Request) -> Response:
        s = await run_in_threadpool(cache.get)
        if request.query_params.get("since") == s["version"]:
            return JSONResponse({"version": s["version"], "unchanged": True}, headers=NO_CACHE)
        return JSONResponse(s, headers=NO_CACHE)

    async def records(request: Request) -> Response:
        kind = request.path_params["kind"]
        try:
            offset = int(request.query_params.get("offset", 0))
            limit = int(request.query_params.get("limit", 500))
        except ValueError:
            return _error(400, "offset and limit must be integers")
        if offset < 0 or not 0 < limit <= MAX_LIMIT:
            return _error(400, f"offset must be ≥ 0 and limit in 1..{MAX_LIMIT}")
        src = await run_in_threadpool(read_sources, root)
        if kind == "rounds":
            rows: list[Any] = (src.report or {}).get("rounds_detail", [])
        elif kind == "txlog":
            rows = src.txlog
        elif kind == "log":
            rows = src.log
        else:
            return _error(404, f"no records {kind!r}: rounds, txlog or log")
        return JSONResponse(
            {
                "kind": kind,
                "total": len(rows),
                "offset": offset,
                "rows": rows[offset : offset + limit],
                "problems": src.problems,
            },
            headers=NO_CACHE,
        )

    async def blob(request: Request) -> Response:
        digest = request.path_params["digest"]
        if not DIGEST.match(digest):
            return _error(400, f"a blob is named by 64 lowercase hex characters (sha256), not {digest!r}")
        s = await run_in_threadpool(cache.get)
        return JSONResponse(await run_in_threadpool(blob_info, root, digest, s["rounds"]), headers=NO_CACHE)

    async def files(request: Request) -> Response:
        rel = request.path_params["path"]
        path = safe_child(root, rel)
        if path is None:
            return _error(404, f"{rel!r}: no such file in the run directory")
        media = "text/plain; charset=utf-8" if path.suffix in (".log", ".jsonl", ".toml", ".md") else None
        return FileResponse(path, media_type=media, headers=NO_CACHE)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/api/records/{kind}", records),
            Route("/api/blob/{digest:path}", blob),
            Route("/files/{path:path}", files),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
