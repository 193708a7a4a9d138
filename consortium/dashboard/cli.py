"""`consortium dashboard RUN_DIR`: the command, kept out of cli.py (which only registers it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from consortium.cli_support import fail

from .rundir_view import RunDirMissing, check_run_dir


def dashboard(
    run_dir: Annotated[
        Path | None, typer.Argument(help="run directory to watch (finished or still running)")
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port (0: any free port)")] = 8750,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    audit: Annotated[
        bool, typer.Option(help="audit the run once it is complete; the page shows the verdict")
    ] = False,
    rpc_url: Annotated[str | None, typer.Option(help="watch a live network instead: JSON-RPC URL")] = None,
    contract: Annotated[str | None, typer.Option(help="with --rpc-url: the Consortium contract")] = None,
    store: Annotated[
        str | None, typer.Option(help="with --rpc-url: blob store (directory, http(s):// or fsspec URL)")
    ] = None,
) -> None:
    """Serve a read-only page that shows a run's rounds as they arrive (opens no browser by itself).

    Exit 2 when RUN_DIR is not a directory, the options do not fit, or the port is invalid or taken."""
    # import time: `consortium --help` imports this module; starlette and the store (torch) load later
    from .app import make_app, make_live_app
    from .serve import serve

    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535, got {port}")
    if rpc_url is not None:
        if run_dir is not None or contract is None or audit:
            fail("--rpc-url needs --contract (and --store for blobs), and no RUN_DIR or --audit")
        what, app = f"{rpc_url} contract {contract}", make_live_app(rpc_url, str(contract), store)
    elif run_dir is None:
        fail("give a RUN_DIR, or --rpc-url with --contract and --store")
    else:
        try:
            root = check_run_dir(run_dir)
        except RunDirMissing as e:
            fail(str(e))
        what, app = str(root), make_app(root, audit=audit)  # problems go to the terminal from here

    def ready(url: str) -> None:
        print(f"dashboard of {what} at {url} (read-only; Ctrl-C stops it)", flush=True)

    try:
        serve(app, host, port, on_ready=ready)
    except OSError as e:
        fail(f"cannot serve on {host}:{port}: {e}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def start_beside(out: Path, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """For `consortium run --dashboard`: bind now (a bad or taken port fails before the run starts),
    serve the run directory the run creates under `out` as soon as it exists; returns what the run
    calls once it is over to keep the page up until Ctrl-C."""
    from .serve import serve_beside  # import time: as in `dashboard`

    if not 0 <= port <= 65535:
        fail(f"--dashboard-port must be in 0..65535, got {port}")
    try:
        serve_beside(out, host, port, on_ready=lambda line: print(line, flush=True))
    except OSError as e:
        fail(f"cannot serve the dashboard on {host}:{port}: {e}")

    def linger() -> None:
        print("run over; the dashboard stays up until Ctrl-C", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None

    return linger
