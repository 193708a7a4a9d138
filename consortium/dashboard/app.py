"""The dashboard's ASGI app: one page, its static files and read-only JSON endpoints, over a run
directory (`make_app`) or a live network's public records (`make_live_app`).

GET  /                      the page (polls /api/state; re-renders only when the source changed)
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

from consortium.store import is_digest

from .audit_once import AuditOnce
from .blobs import blob_info, blob_uses
from .live_chain import LiveChain
from .rundir_view import fingerprint, read_sources, safe_child
from .state import build_state

STATIC = Path(__file__).parent / "static"
NO_CACHE = {"Cache-Control": "no-store"}
MAX_LIMIT = 5000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_CACHE)


class RunDirSource:
    """A run directory's files (a new state when one changes); optionally audited once complete."""

    def __init__(self, root: Path, audit: AuditOnce | None = None) -> None:
        self.root, self.audit, self.label = root, audit, str(root)

    def version(self) -> str:
        return fingerprint(self.root) + (f"-{self.audit.tag}" if self.audit else "")

    def build(self) -> dict[str, Any]:
        s = build_state(self.root)
        if self.audit is not None and s["audit"] is None:
            s["audit"] = self.audit.poll((s["run"] or {}).get("status"))
        return s

    def records(self, kind: str) -> tuple[list[Any] | None, list[str]]:
        src = read_sources(self.root)
        txlog = [{k: _clip(v) for k, v in e.items()} for e in src.txlog]  # whole file: /files/chain/...
        removal = src.removal or {}  # a `consortium remove` directory: its kept and replayed rounds
        rounds = (src.report or {}).get("rounds_detail") or removal.get("kept_rounds", []) + removal.get(
            "rounds", []
        )
        rows = {"rounds": rounds, "txlog": txlog, "log": src.log}
        return rows.get(kind), src.problems

    def blob(self, digest: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
        return blob_info(self.root, digest, rounds)

    def file(self, rel: str) -> Path | None:
        return safe_child(self.root, rel)


def _clip(v: Any, keep: int = 66) -> Any:
    """A long hex field (calldata, a signed transaction) cut for the table, its length said."""
    if isinstance(v, str) and len(v) > keep + 20:
        return f"{v[:keep]}… ({(len(v) - 2) // 2:,} bytes)"
    return v


class LiveSource:
    """A live network's public records (`live_chain.LiveChain`): a new state at each new block."""

    def __init__(self, chain: LiveChain) -> None:
        self.chain, self.label = chain, chain.where

    def version(self) -> str:
        return self.chain.version()

    def build(self) -> dict[str, Any]:
        return self.chain.build()

    def records(self, kind: str) -> tuple[list[Any] | None, list[str]]:
        s = self.chain.build()
        rows = {"rounds": s["rounds"], "txlog": s["events"], "log": []}
        return rows.get(kind), s["problems"]

    def blob(self, digest: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
        return self.chain.blob(digest) | {"uses": blob_uses(digest, rounds)}

    def file(self, rel: str) -> Path | None:
        return None  # no run directory: nothing to serve


class StateCache:
    """The last state built, rebuilt only when the source's version changes; each new problem goes to
    the terminal once."""

    def __init__(self, source: RunDirSource | LiveSource, warn: Callable[[str], None]) -> None:
        self.source, self.warn = source, warn
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._told: set[str] = set()

    def get(self) -> dict[str, Any]:
        with self._lock:
            version = self.source.version()
            if self._state is None or self._state["version"] != version:
                self._state = self.source.build()
                self._state["version"] = version
                for p in self._state["problems"]:
                    if p not in self._told:
                        self.warn(p if p.startswith("--rpc-url") else f"{self.source.label}: {p}")
                self._told = set(self._state["problems"])
            return self._state


def _stderr(line: str) -> None:
    print(f"dashboard: {line}", file=sys.stderr, flush=True)


def make_app(run_dir: Path, warn: Callable[[str], None] = _stderr, audit: bool = False) -> Starlette:
    """The app for one run directory (resolved here; it may not hold a report yet); with `audit`, the
    run is audited once it is complete and the page shows the verdict."""
    root = run_dir.resolve()
    return _app(RunDirSource(root, AuditOnce(root) if audit else None), warn)


def make_live_app(
    rpc_url: str, contract: str, store: str | None, warn: Callable[[str], None] = _stderr
) -> Starlette:
    """The app for a live network, from its public records: the contract's events and the blob store."""
    return _app(LiveSource(LiveChain(rpc_url, contract, store)), warn)


def _app(source: RunDirSource | LiveSource, warn: Callable[[str], None]) -> Starlette:
    cache = StateCache(source, warn)
    cache.get()  # a missing, malformed or unreachable source is said in the terminal at once

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_CACHE)

    async def state(request: Request) -> Response:
        s = await run_in_threadpool(cache.get)
        if request.query_params.get("since") == s["version"]:
            return JSONResponse({"version": s["version"], "unchanged": True}, headers=NO_CACHE)
        return JSONResponse({k: v for k, v in s.items() if k != "events"}, headers=NO_CACHE)

    async def records(request: Request) -> Response:
        kind = request.path_params["kind"]
        try:
            offset = int(request.query_params.get("offset", 0))
            limit = int(request.query_params.get("limit", 500))
        except ValueError:
            return _error(400, "offset and limit must be integers")
        if offset < 0 or not 0 < limit <= MAX_LIMIT:
            return _error(400, f"offset must be ≥ 0 and limit in 1..{MAX_LIMIT}")
        rows, problems = await run_in_threadpool(source.records, kind)
        if rows is None:
            return _error(404, f"no records {kind!r}: rounds, txlog or log")
        page_rows = rows[offset : offset + limit]
        body = {"kind": kind, "total": len(rows), "offset": offset, "rows": page_rows, "problems": problems}
        return JSONResponse(body, headers=NO_CACHE)

    async def blob(request: Request) -> Response:
        digest = request.path_params["digest"]
        if not is_digest(digest):
            return _error(400, f"a blob is named by 64 lowercase hex characters (sha256), not {digest!r}")
        s = await run_in_threadpool(cache.get)
        return JSONResponse(await run_in_threadpool(source.blob, digest, s["rounds"]), headers=NO_CACHE)

    async def files(request: Request) -> Response:
        rel = request.path_params["path"]
        path = source.file(rel)
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
