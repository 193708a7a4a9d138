"""The run directory: created only once the inputs are valid, every file written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from consortium.config import ConfigError, RunConfig

TXLOG = "chain/txlog.jsonl"  # every transaction of a chain run, replayable by `consortium audit`
HEAD = "chain/head.json"  # the chain head after the last round: what a replay must reproduce


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


def load_run_config(path: Path) -> RunConfig:
    """The resolved config a run wrote (what a node and the audit read): ConfigError naming the file
    and the field when it is missing or not valid."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return RunConfig.model_validate(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
