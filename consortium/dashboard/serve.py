"""Serve the dashboard with uvicorn: bound first (port 0 works, the printed URL is the real one), in the
foreground for `consortium dashboard`, or in a daemon thread beside a run (`consortium run --dashboard`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store.listen import bind as bind_listening
from .app import make_app


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket and the dashboard's URL (OSError when the address is taken or invalid)."""
    sock, url = bind_listening(host, port)
    return sock, url + "/"


def serve(app: Any, host: str, port: int, on_ready: Callable[[str], None] = print) -> None:
    """Serve the ASGI `app` until interrupted."""
    import uvicorn  # optional (the net extra): only serving needs it

    sock, url = bind(host, port)
    on_ready(url)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def newest_run(out_root: Path, since: float) -> Path | None:
    """The newest directory under `out_root` created at or after `since` that holds a report.json
    (how `run --dashboard` finds the run directory the simulation creates with its timestamp)."""
    if not out_root.is_dir():
        return None
    found = [
        p
        for p in out_root.iterdir()
        if p.is_dir() and (p / "report.json").is_file() and p.stat().st_mtime >= since - 1
    ]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def serve_beside(
    out_root: Path, host: str, port: int, on_ready: Callable[[str], None] = print, wait_s: float = 600.0
) -> threading.Thread:
    """Start a daemon thread that waits for the run directory the simulation is about to create under
    `out_root`, then serves it (the socket is bound at once: a taken port fails before the run starts)."""
    import uvicorn  # optional (the net extra): only serving needs it

    since = time.time()
    sock, url = bind(host, port)

    def main() -> None:
        deadline = time.time() + wait_s
        run_dir = None
        while run_dir is None and time.time() < deadline:
            run_dir = newest_run(out_root, since)
            if run_dir is None:
                time.sleep(0.2)
        if run_dir is None:
            sock.close()
            return
        on_ready(f"dashboard of {run_dir} at {url}")
        # not the main thread: uvicorn leaves the signal handlers to the run
        uvicorn.Server(uvicorn.Config(make_app(run_dir), log_level="warning")).run(sockets=[sock])

    thread = threading.Thread(target=main, name="consortium-dashboard", daemon=True)
    thread.start()
    return thread
