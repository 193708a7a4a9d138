"""`consortium audit --rpc-url` against a run made on a real anvil node, its store served over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_chain import anvil_node, live_smoke_run

from consortium.audit import audit_live

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def anvil() -> Iterator[str]:
    yield from anvil_node()


@pytest.fixture(scope="module")
def run(anvil: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return live_smoke_run(anvil, tmp_path_factory.mktemp("live"), [])


@pytest.fixture(scope="module")
def served(run: tuple[Path, dict]) -> Iterator[str]:
    """The run's store behind the HTTP blob server (`consortium store serve`), on a free port."""
    import uvicorn

    from consortium.store.server import make_app

    path, _ = run
    config = uvicorn.Config(make_app(path / "store", 1 << 26), host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def test_live_audit_passes_from_a_directory_and_over_http(
    run: tuple[Path, dict], anvil: str, served: str
) -> None:
    path, report = run
    contract = report["chain"]["contract"]
    for store in (path / "store", served):
        result = audit_live(anvil, contract, store, path / "config.toml")
        assert result.ok, (store, result.problems)
        assert result.checked["candidates recomputed"] == report["rounds_completed"]


def test_live_audit_names_a_tampered_blob(run: tuple[Path, dict], anvil: str, tmp_path: Path) -> None:
    import shutil

    path, report = run
    store = tmp_path / "store"
    shutil.copytree(path / "store", store)
    c = report["rounds_detail"][0]["commitments"][0]
    blob = store / c["blob"][:2] / c["blob"]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    result = audit_live(anvil, report["chain"]["contract"], store, path / "config.toml")
    assert not result.ok
    assert any(c["blob"] in p and "does not match its commitment" in p for p in result.problems), (
        result.problems
    )
