"""The exported adapter of a run directory checked against the global model it claims to be."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from consortium.audit.report import AuditReport
from consortium.store import BlobNotFound, BlobStore, IntegrityError


def check_exported_adapter(run_dir: Path, store: BlobStore, final: str, out: AuditReport) -> None:
    """`adapter/adapter_model.safetensors` holds exactly the stored global model `final`: what a user
    loads is what the records say was aggregated (the run audit and the removal audit share it)."""
    try:
        state = store.get_tensors(final)
    except (BlobNotFound, IntegrityError) as e:
        out.problems.append(f"final adapter: {e}")
        return
    exported = run_dir / "adapter" / "adapter_model.safetensors"
    if not exported.is_file():
        out.problems.append(f"final adapter: {exported} is missing")
        return
    saved = load_file(str(exported))
    for k, t in sorted(state.items()):
        if k not in saved or not torch.equal(saved[k], t):
            out.problems.append(
                f"final adapter: tensor {k} of {exported} differs from the global model {final}"
            )
            return
    out.count("adapter tensors checked", len(state))
