"""The checked-in build of Consortium.vy: the client deploys from it without a compiler."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "Consortium.vy"
ARTIFACT = HERE / "artifact.json"
EVM_VERSION = "cancun"  # must match the `#pragma evm-version` line of the source


@cache
def _cached(path: Path, mtime: float) -> dict[str, Any]:
    return json.loads(path.read_text())


def load_artifact(path: Path = ARTIFACT) -> dict[str, Any]:
    """abi, bytecode, compiler and EVM versions, source sha256."""
    return _cached(path, path.stat().st_mtime)
