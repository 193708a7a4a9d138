"""bench/provenance.py: a results file names the commit its code came from, and says when it did not."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_provenance", Path(__file__).parents[1] / "bench" / "provenance.py"
)
assert _SPEC is not None and _SPEC.loader is not None
pv = sys.modules.setdefault("bench_provenance", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(pv)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with code, a results file and a note, all committed."""
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "run.py").write_text("x = 1\n")
    (tmp_path / "bench" / "results" / "grid.json").write_text("{}\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "NOTES.md").write_text("notes\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def test_a_clean_checkout_is_its_head(repo: Path) -> None:
    assert pv.git_commit(repo) == _git(repo, "rev-parse", "--short", "HEAD")


@pytest.mark.parametrize("where", [".", "bench"])
def test_results_and_notes_written_during_a_run_leave_it_clean(repo: Path, where: str) -> None:
    """From the top or from bench/, where the benchmarks ask it (a pathspec relative to bench/ once
    missed bench/results, and every cell of a grid whose tables had been re-rendered read +dirty)."""
    (repo / "bench" / "results" / "grid.json").write_text('{"cell": 1}\n')
    (repo / "docs" / "NOTES.md").write_text("more notes\n")
    assert pv.git_commit(repo / where) == _git(repo, "rev-parse", "--short", "HEAD")


def test_code_rewritten_with_the_same_bytes_is_not_a_change(repo: Path) -> None:
    code = repo / "bench" / "run.py"
    code.write_text(code.read_text())  # the committed content, a later mtime
    later = code.stat().st_mtime + 60
    os.utime(code, (later, later))
    assert pv.git_commit(repo) == _git(repo, "rev-parse", "--short", "HEAD")


@pytest.mark.parametrize("change", ["edit", "stage"])
@pytest.mark.parametrize("where", [".", "bench"])
def test_uncommitted_code_is_marked_dirty(repo: Path, change: str, where: str) -> None:
    (repo / "top.py").write_text("y = 1\n")  # code outside the folder git is asked from
    _git(repo, "add", "top.py")
    _git(repo, "commit", "-qm", "second")
    (repo / "top.py").write_text("y = 2\n")
    if change == "stage":
        _git(repo, "add", "top.py")
    assert pv.git_commit(repo / where) == _git(repo, "rev-parse", "--short", "HEAD") + "+dirty"


def test_outside_a_checkout_there_is_no_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # were /tmp inside a checkout
    assert pv.git_commit(tmp_path) is None
