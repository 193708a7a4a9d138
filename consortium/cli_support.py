"""What every command line of the package shares: the one-line error exit, quiet libraries and the
end-of-run table."""

from __future__ import annotations

import warnings

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """One line naming what was wrong, no traceback, a non-zero exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def quiet_libraries() -> None:
    """Our progress bars replace the libraries' own; known-harmless deprecation chatter is dropped."""
    from transformers.utils import logging as hf_logging  # import time: transformers takes seconds

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
