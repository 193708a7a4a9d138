"""`consortium` command line: run and audit; node, bench, export come with their issues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Trustless collaborative LoRA fine-tuning."
)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """One line naming what was wrong, no traceback, a non-zero exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def main() -> None:
    """Consortium: several organisations fine-tune one open LLM together without trusting each other."""


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML config (overrides the preset)")] = None,
    preset: Annotated[str, typer.Option(help="built-in preset: smoke | demo")] = "demo",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted override, e.g. --set rounds=3")
    ] = None,
    out: Annotated[Path, typer.Option(help="parent directory of the run directory")] = Path("runs"),
) -> None:
    """Run federated LoRA fine-tuning in-process and write a run directory with a report."""
    from consortium.config import ConfigError, load_config
    from consortium.data import DataError

    try:
        cfg = load_config(config, preset, set_ or [])
    except ConfigError as e:
        fail(str(e))
    console = Console()
    quiet_libraries()
    from consortium.model import ModelLoadError
    from consortium.probe import ProbeError
    from consortium.sim import Simulation

    try:
        sim = Simulation(cfg, console)
    except (DataError, ModelLoadError, ProbeError) as e:
        fail(str(e))
    from consortium.privacy import PrivacyBudgetExceeded

    try:
        path = sim.run(out)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except PrivacyBudgetExceeded as e:
        fail(f"{e}; the report is in {sim.path}", 3)
    summary(json.loads((path / "report.json").read_text()), console)
    console.print(f"run directory: [bold]{path}[/]")


@app.command()
def audit(
    run_dir: Annotated[Path | None, typer.Argument(help="run directory to audit")] = None,
    rpc_url: Annotated[str | None, typer.Option(help="audit a live network instead: JSON-RPC URL")] = None,
    contract: Annotated[
        str | None, typer.Option(help="with --rpc-url: the Consortium contract address")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="with --rpc-url: blob store: directory, http(s):// or fsspec URL")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="with --rpc-url: the run's config.toml")] = None,
) -> None:
    """Recompute a run from public records (chain, store, config) and report every mismatch.

    Exit 0 when everything verifies, 1 when something does not match, 2 when the audit cannot start."""
    from consortium.audit import AuditInputError, audit_live, audit_run

    console = Console()
    try:
        if rpc_url is not None:
            if run_dir is not None or contract is None or store is None or config is None:
                fail("--rpc-url needs --contract, --store and --config, and no RUN_DIR")
            result = audit_live(rpc_url, str(contract), store, Path(str(config)))
        elif run_dir is None:
            fail("give a RUN_DIR, or --rpc-url with --contract, --store and --config")
        else:
            result = audit_run(run_dir)
    except AuditInputError as e:
        fail(str(e))
    checked = ", ".join(f"{n} {what}" for what, n in result.checked.items())
    if result.ok:
        console.print(f"[bold green]audit passed[/]: {checked}", highlight=False, soft_wrap=True)
        return
    for p in result.problems:
        console.print(f"[red]mismatch[/] {p}", highlight=False, soft_wrap=True)
    console.print(
        f"[bold red]audit FAILED[/]: {len(result.problems)} mismatch(es); checked {checked}", highlight=False
    )
    raise typer.Exit(1)


store_app = typer.Typer(no_args_is_help=True, help="The content-addressed blob store.")
app.add_typer(store_app, name="store")


@store_app.command("serve")
def store_serve(
    dir_: Annotated[Path, typer.Option("--dir", help="blob directory (created if missing)")],
    port: Annotated[int, typer.Option(help="TCP port (0: any free port)")] = 8700,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    max_bytes: Annotated[int, typer.Option(help="largest blob accepted, in bytes")] = 256 * 1024 * 1024,
) -> None:
    """Serve a blob directory over HTTP: PUT verifies sha256 and size, GET re-verifies before serving."""
    if dir_.exists() and not dir_.is_dir():
        fail(f"--dir {dir_}: exists and is not a directory")
    if max_bytes <= 0 or not 0 <= port <= 65535:
        fail(f"--max-bytes must be positive and --port in 0..65535, got {max_bytes} and {port}")
    from consortium.store_server import serve

    def ready(url: str) -> None:
        print(f"serving blob store {dir_} at {url} (max {max_bytes:,} bytes per blob)", flush=True)

    try:
        serve(dir_, host, port, max_bytes, on_ready=ready)
    except OSError as e:
        fail(f"cannot serve {dir_} on {host}:{port}: {e}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def quiet_libraries() -> None:
    """Our progress bars replace the libraries' own; known-harmless deprecation chatter is dropped."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def summary(report: dict, console: Console) -> None:
    """The one-screen table at the end of a run."""
    acc = report["accuracy"]
    domains = list(acc["base"])
    table = Table(title=f"{report['name']}: exact-match accuracy", show_lines=False)
    table.add_column("model")
    for d in domains:
        table.add_column(d, justify="right")
    for name, row in acc.items():
        table.add_row(name, *(f"{row[d]:.3f}" for d in domains))
    console.print(table)
    t = report["timings"]
    console.print(
        f"total {t.get('total', 0):.0f}s; "
        f"{report['bytes']['upload_per_participant_per_round']:,} bytes up per participant per round"
    )


def _probe_commands() -> None:
    from consortium.probe.cli import probe_app

    app.add_typer(probe_app, name="probe")


_probe_commands()

if __name__ == "__main__":
    app()
