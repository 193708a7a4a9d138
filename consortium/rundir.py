"""The run directory: created only once the inputs are valid, every file written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w


def atomic_write(path: Path, data: bytes | str) -> None:
    """Temp file in the same directory + rename: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """`<root>/<name>-<timestamp>/` with config.toml, report.*, plots/, adapter/, store/ and run.log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.plots = path / "plots"
        self.store = path / "store"
        self.adapter = path / "adapter"
        self.log_path = path / "run.log"

    @classmethod
    def create(cls, root: Path, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = root / f"{name}-{stamp}"
        n = 1
        while path.exists():
            path = root / f"{name}-{stamp}-{n}"
            n += 1
        path.mkdir(parents=True)
        rd = cls(path)
        rd.plots.mkdir()
        return rd

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.path / "config.toml", tomli_w.dumps(config))

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def log(self, line: str) -> None:
        with self.log_path.open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")
