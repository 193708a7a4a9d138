"""What every command line of the package shares: the one-line error exit and quiet libraries."""

from __future__ import annotations

import warnings

import typer
from rich.console import Console

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
