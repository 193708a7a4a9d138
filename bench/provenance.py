"""The code a benchmark's figures came from, so that a results file can name its commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

# what is not code: results, notes and docs change while a grid runs without changing what it computes
# (pathspecs from the top of the checkout: git runs in bench/, where a plain one would be bench/bench/...)
CODE = (":(top)", ":(top,exclude)bench/results", ":(top,exclude)*.md")


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_commit(repo: Path | None = None) -> str | None:
    """The short hash of the checkout's HEAD, with `+dirty` when tracked code differs from it (results
    and Markdown aside): a figure from uncommitted code must not pass for the commit's. None outside a
    git checkout, or without git."""
    where = repo or Path(__file__).resolve().parent
    try:
        head = _git(where, "rev-parse", "--short", "HEAD")
        dirty = _git(where, "status", "--porcelain", "--untracked-files=no", "--", *CODE)
    except (OSError, subprocess.CalledProcessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None
