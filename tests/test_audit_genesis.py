"""Issue 22 item 4: the audit checks the deployed genesis against the run config's initial adapter."""

from __future__ import annotations

import hashlib
from pathlib import Path

from consortium.audit import AuditReport, audit_chain
from consortium.chain import ChainClient, EmbeddedBackend
from consortium.config import load_config
from consortium.store import BlobStore


def _audit(tmp_path: Path, deployed: bytes, expected: str) -> AuditReport:
    client = ChainClient.deploy(EmbeddedBackend(2), genesis_hash=deployed)
    out = AuditReport()
    audit_chain(client, BlobStore(tmp_path), load_config(preset="smoke"), out, genesis=expected)
    return out


def test_a_deployment_with_another_genesis_fails_the_audit(tmp_path: Path) -> None:
    deployed = hashlib.sha256(b"someone else's adapter").digest()
    out = _audit(tmp_path, deployed, "ab" * 32)
    want = f"genesis: the contract was deployed with {deployed.hex()}"
    assert any(p.startswith(want) for p in out.problems)


def test_the_run_configs_genesis_passes_that_check(tmp_path: Path) -> None:
    deployed = hashlib.sha256(b"the run's adapter").digest()
    out = _audit(tmp_path, deployed, deployed.hex())
    assert out.checked["genesis checked"] == 1
    assert not [p for p in out.problems if p.startswith("genesis")]
