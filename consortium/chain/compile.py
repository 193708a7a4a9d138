"""Compile Consortium.vy and keep the checked-in artifact in step with the source.

`python -m consortium.chain.compile` regenerates artifact.json; `--check` exits 1 if it drifted.
The artifact lets the client deploy without compiling (Vyper takes seconds on this contract).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from .artifact import ARTIFACT, EVM_VERSION, SOURCE, load_artifact


def source_sha256(path: Path = SOURCE) -> str:
    """Hash of the exact source text the artifact was built from."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compile_source(path: Path = SOURCE) -> dict[str, Any]:
    """Compile with the Vyper Python API; returns the artifact dict (abi, bytecode, versions)."""
    # the vyper compiler: only rebuilding the committed artifact needs it (slow to import)
    import vyper
    from vyper.compiler.settings import Settings

    text = path.read_text()
    out = vyper.compile_code(
        text,
        contract_path=path.name,
        output_formats=["abi", "bytecode", "bytecode_runtime"],
        settings=Settings(evm_version=EVM_VERSION),
    )
    return {
        "contract": path.stem,
        "vyper_version": vyper.__version__,
        "evm_version": EVM_VERSION,
        "source_sha256": source_sha256(path),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
    }


def write_artifact(artifact: dict[str, Any], path: Path = ARTIFACT) -> None:
    path.write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n")


def drift(path: Path = SOURCE, artifact_path: Path = ARTIFACT) -> list[str]:
    """Fields where a fresh compile differs from the checked-in artifact (empty: in step)."""
    fresh = compile_source(path)
    stored = load_artifact(artifact_path)
    return [k for k in fresh if fresh[k] != stored.get(k)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        bad = drift()
        if bad:
            print(f"artifact.json drifted from Consortium.vy in: {', '.join(bad)}", file=sys.stderr)
            return 1
        print("artifact.json is in step with Consortium.vy")
        return 0
    art = compile_source()
    write_artifact(art)
    print(
        f"wrote {ARTIFACT} (vyper {art['vyper_version']}, evm {art['evm_version']}, "
        f"{len(art['bytecode']) // 2 - 1} bytes initcode)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
