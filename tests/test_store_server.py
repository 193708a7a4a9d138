"""HTTP blob server and remote store clients: the real server (uvicorn on loopback), real sockets."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from consortium.cli import app as cli_app
from consortium.store import (
    BlobNotFound,
    BlobStore,
    IntegrityError,
    StoreError,
    StoreUnavailable,
    open_store,
)
from consortium.store.remote import FsspecBlobStore, HttpBlobStore
from consortium.store.server import make_app


def _bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def serving(asgi, sock: socket.socket | None = None, delay: float = 0.0) -> Iterator[str]:
    """Run `asgi` under uvicorn in a background thread; yield its URL (started `delay` s late if set)."""
    if sock is None:
        sock = _bound_socket()
    port = sock.getsockname()[1]
    if delay:  # the port is free (nobody listening) until the server starts
        sock.close()
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="critical", lifespan="off"))

    def run() -> None:
        if delay:
            time.sleep(delay)
            server.run(sockets=[_bound_socket(port)])
        else:
            server.run(sockets=[sock])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not delay:
        while not server.started:
            time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Counting:
    """ASGI wrapper counting /blobs requests; answers 503 to the first `fail_first` of them."""

    def __init__(self, inner, fail_first: int = 0) -> None:
        self.inner, self.fail_first, self.count = inner, fail_first, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/blobs/"):
            self.count += 1
            if self.count <= self.fail_first:
                await Response("try later", status_code=503)(scope, receive, send)
                return
        await self.inner(scope, receive, send)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "blobs"
    with serving(make_app(root, max_bytes=1024)) as url:
        yield url, root


def test_roundtrip_through_http(server: tuple[str, Path]) -> None:
    url, root = server
    s = HttpBlobStore(url)
    digest = s.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert (root / digest[:2] / digest).read_bytes() == b"hello"  # the server's directory is a BlobStore
    assert s.get(digest) == b"hello" and digest in s
    assert s.put(b"hello") == digest
    # 201 for a new blob, 200 when it is already there
    other = b"other"
    name = hashlib.sha256(other).hexdigest()
    assert requests.put(f"{url}/blobs/{name}", data=other).status_code == 201
    assert requests.put(f"{url}/blobs/{name}", data=other).status_code == 200
    t = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    back = s.get_tensors(s.put_tensors(t))
    assert torch.equal(back["w"], t["w"])
    assert BlobStore(root).get_tensors(s.put_tensors(t))["w"].equal(t["w"])
    assert not list(root.rglob(".tmp-*"))


def test_wrong_hash_is_refused_and_nothing_written(server: tuple[str, Path]) -> None:
    url, root = server
    claimed = hashlib.sha256(b"honest").hexdigest()
    r = requests.put(f"{url}/blobs/{claimed}", data=b"forged")
    assert r.status_code == 400
    msg = r.json()["error"]
    assert claimed in msg and hashlib.sha256(b"forged").hexdigest() in msg
    assert _files(root) == []


def test_oversize_is_refused_with_and_without_content_length(server: tuple[str, Path]) -> None:
    url, root = server
    s = HttpBlobStore(url, retries=0)
    assert s.put(b"a" * 1024) in s  # exactly the limit is accepted
    (root / "keep").write_bytes(b"")  # marker so the listing below is about new files only
    before = set(_files(root))
    with pytest.raises(
        StoreError, match=r"refused blob [0-9a-f]{64} \(2,000 bytes\).*over the limit of 1,024"
    ):
        s.put(b"b" * 2000)
    big = b"c" * 5000
    name = hashlib.sha256(big).hexdigest()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    r = requests.put(f"{url}/blobs/{name}", data=chunks())
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    assert set(_files(root)) == before  # no blob, no temp file


def test_corrupt_blob_on_disk_is_not_served(server: tuple[str, Path]) -> None:
    url, root = server
    s = HttpBlobStore(url, retries=3, backoff=0.01)
    digest = s.put(b"precious bytes")
    path = root / digest[:2] / digest
    path.write_bytes(b"precious bytez")
    with pytest.raises(IntegrityError, match=f"blob {digest} in {url} is corrupt"):
        s.get(digest)
    r = requests.get(f"{url}/blobs/{digest}")
    assert r.status_code == 500 and b"bytez" not in r.content and "corrupt" in r.json()["error"]
    assert requests.head(f"{url}/blobs/{digest}").status_code == 500
    with pytest.raises(IntegrityError):
        digest in s  # noqa: B015


def test_a_corrupt_blob_on_the_server_is_repaired_by_a_re_upload(server: tuple[str, Path]) -> None:
    url, root = server
    s = HttpBlobStore(url, retries=0)
    digest = s.put(b"precious bytes")
    (root / digest[:2] / digest).write_bytes(b"precious bytez")
    with pytest.raises(IntegrityError):
        s.get(digest)
    s.put(b"precious bytes")
    assert s.get(digest) == b"precious bytes"
    assert BlobStore(root).get(digest) == b"precious bytes"


def test_the_client_reads_no_body_past_its_limit() -> None:
    """A server answering with a body over the client's limit (declared or not) is refused as soon as
    the limit is passed: the client never holds more than `max_bytes` of it."""
    sent = {"bytes": 0}

    async def flood(request) -> Response:
        async def chunks():
            for _ in range(64):
                sent["bytes"] += 4096
                yield b"x" * 4096

        from starlette.responses import StreamingResponse

        return StreamingResponse(chunks())  # chunked: no Content-Length to refuse it by

    async def declared(request) -> Response:
        return Response(b"y" * 5000)

    routes = [Route("/blobs/{d}", flood), Route("/declared/blobs/{d}", declared)]
    with serving(Starlette(routes=routes)) as url:
        digest = hashlib.sha256(b"real").hexdigest()
        with pytest.raises(StoreError, match=f"blob {digest}.*over 10,000 bytes"):
            HttpBlobStore(url, max_bytes=10_000).get(digest)
        with pytest.raises(StoreError, match="over 1,000 bytes"):
            HttpBlobStore(f"{url}/declared", max_bytes=1000).get(digest)
    with pytest.raises(ValueError, match="max_bytes"):
        HttpBlobStore("http://127.0.0.1:1", max_bytes=0)


def test_client_verifies_what_a_lying_server_sends() -> None:
    async def liar(request) -> Response:
        return Response(b"not what you asked for")

    with serving(Starlette(routes=[Route("/blobs/{d}", liar)])) as url:
        digest = hashlib.sha256(b"real").hexdigest()
        with pytest.raises(IntegrityError, match=f"blob {digest} in {url} is corrupt: its content hashes to"):
            HttpBlobStore(url).get(digest)


def test_missing_and_malformed(server: tuple[str, Path]) -> None:
    url, _ = server
    s = HttpBlobStore(url)
    missing = "0" * 64
    with pytest.raises(BlobNotFound, match=f"blob {missing} not in store {url}"):
        s.get(missing)
    assert missing not in s
    with pytest.raises(ValueError, match="64 lowercase hex"):
        s.get("../etc/passwd")
    with pytest.raises(ValueError, match="64 lowercase hex"):
        "ABC" in s  # noqa: B015
    for bad in ["xyz", "A" * 64, "0" * 63, "a/" + "0" * 64]:
        assert requests.get(f"{url}/blobs/{bad}").status_code == 400
        r = requests.put(f"{url}/blobs/{bad}", data=b"x")
        assert r.status_code == 400 and "64 lowercase hex" in r.json()["error"]


def test_5xx_is_retried_with_backoff_then_succeeds(tmp_path: Path) -> None:
    flaky = Counting(make_app(tmp_path), fail_first=2)
    with serving(flaky) as url:
        s = HttpBlobStore(url, retries=3, backoff=0.05)
        t0 = time.monotonic()
        digest = s.put(b"eventually")
        assert flaky.count == 3 and time.monotonic() - t0 >= 0.05 + 0.1  # two waits: b, 2b
        assert s.get(digest) == b"eventually"
    flaky = Counting(make_app(tmp_path), fail_first=10)
    with serving(flaky) as url:
        with pytest.raises(
            StoreUnavailable, match=r"GET .*/blobs/0{64} failed after 3 attempt\(s\).*HTTP 503"
        ):
            HttpBlobStore(url, retries=2, backoff=0.01).get("0" * 64)
        assert flaky.count == 3


def test_a_call_gives_up_within_its_budget_however_many_retries_are_left(tmp_path: Path) -> None:
    """A store that keeps failing cannot hold a caller with a deadline (a voter's window) for
    `retries` attempts: with a budget the call stops retrying when the next wait would pass it."""
    app = Counting(make_app(tmp_path), fail_first=10**9)
    with serving(app) as url:
        s = HttpBlobStore(url, retries=10**6, backoff=0.01, max_delay=0.02, budget=0.3)
        with pytest.raises(StoreUnavailable, match=r"within its budget of 0.3s.*HTTP 503"):
            s.get("0" * 64)
    assert 1 <= app.count < 1000  # a wait of at least 0.01 s between attempts: at most 30 in 0.3 s


def test_a_node_gives_its_http_store_a_budget(tmp_path: Path) -> None:
    from consortium.node.net import store_options
    from consortium.node_config import NodeConfig

    base = {"rpc_url": "x", "contract": "0x" + "1" * 40, "run_config": "r.toml", "participant_index": 0}
    http = NodeConfig(store="http://10.0.0.5:8700", store_budget_s=7.5, **base)
    assert open_store(http.store, **store_options(http)).budget == 7.5  # type: ignore[attr-defined]
    assert store_options(NodeConfig(store=str(tmp_path), **base)) == {}


def test_4xx_is_not_retried(tmp_path: Path) -> None:
    counted = Counting(make_app(tmp_path, max_bytes=10))
    with serving(counted) as url:
        s = HttpBlobStore(url, retries=5, backoff=0.01)
        with pytest.raises(StoreError):
            s.put(b"x" * 11)
        assert counted.count == 1
        with pytest.raises(BlobNotFound):
            s.get("1" * 64)
        assert counted.count == 2


def test_server_down_then_up_is_retried(tmp_path: Path) -> None:
    with serving(make_app(tmp_path), delay=0.4) as url:
        s = HttpBlobStore(url, retries=8, backoff=0.05)  # waits 0.05, 0.1, 0.2, 0.4, ...
        digest = s.put(b"late server")
        assert BlobStore(tmp_path).get(digest) == b"late server"


def test_unreachable_server_names_url_and_blob() -> None:
    sock = _bound_socket()
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there
    s = HttpBlobStore(f"http://127.0.0.1:{port}/", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(
        StoreUnavailable, match=rf"PUT http://127.0.0.1:{port}/blobs/[0-9a-f]{{64}} failed after 2"
    ):
        s.put(b"x")


def test_open_store_picks_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path / "a"), BlobStore)
    assert isinstance(open_store(str(tmp_path / "b")), BlobStore)
    f = open_store(f"file://{tmp_path}/c")
    assert isinstance(f, BlobStore) and f.root == tmp_path / "c"
    h = open_store("http://127.0.0.1:1/", retries=0)
    assert isinstance(h, HttpBlobStore) and h.url == "http://127.0.0.1:1" and h.retries == 0
    assert isinstance(open_store("https://blobs.example.org"), HttpBlobStore)
    assert isinstance(open_store("memory://consortium-test-pick"), FsspecBlobStore)
    with pytest.raises(ValueError, match="file:// URLs must name a local path"):
        open_store("file://otherhost/x")


def test_fsspec_store_roundtrip_and_verification() -> None:
    s = open_store("memory://consortium-test-fsspec")
    digest = s.put(b"in memory")
    assert s.get(digest) == b"in memory" and digest in s and s.put(b"in memory") == digest
    t = {"a": torch.ones(2, 2)}
    assert torch.equal(s.get_tensors(s.put_tensors(t))["a"], t["a"])
    missing = "f" * 64
    assert missing not in s
    with pytest.raises(BlobNotFound, match=f"blob {missing} not in store memory://"):
        s.get(missing)
    s.fs.pipe_file(s._path(digest), b"tampered")
    with pytest.raises(IntegrityError, match=f"blob {digest} in memory://consortium-test-fsspec is corrupt"):
        s.get(digest)


def test_the_url_the_server_prints_takes_connections_before_uvicorn_runs(tmp_path: Path) -> None:
    """`serve` announces its URL before uvicorn starts: the socket already listens, so a client that
    connects at once waits in the backlog instead of being refused (uvicorn cannot start while
    `on_ready` still runs here)."""
    from consortium.store.server import serve

    announced: list[str] = []
    outcome: list[str] = []

    def on_ready(url: str) -> None:
        announced.append(url)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            outcome.append("connected")
        except OSError as e:
            outcome.append(f"refused: {e}")
        raise KeyboardInterrupt  # stop here: uvicorn never runs

    with pytest.raises(KeyboardInterrupt):
        serve(tmp_path / "blobs", port=0, on_ready=on_ready)
    assert announced and outcome == ["connected"]


def test_cli_help_and_bad_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli_app, ["store", "serve", "--help"])
    assert r.exit_code == 0 and "--max-bytes" in r.output and "--dir" in r.output
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    r = runner.invoke(cli_app, ["store", "serve", "--dir", str(not_a_dir), "--port", "0"])
    assert r.exit_code == 2
    assert "is not a directory" in r.output and len(r.output.strip().splitlines()) == 1


def test_cli_serves_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "consortium.cli",
        "store",
        "serve",
        "--dir",
        str(tmp_path / "d"),
        "--port",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving blob store"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" at ")[1].split()[0]
        s = HttpBlobStore(url, retries=5, backoff=0.05)
        digest = s.put(b"over the wire")
        assert s.get(digest) == b"over the wire"
        assert BlobStore(tmp_path / "d").get(digest) == b"over the wire"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dropped_upload_leaves_no_temp_file(server: tuple[str, Path]) -> None:
    url, root = server
    port = int(url.rsplit(":", 1)[1])
    name = "a" * 64
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(
            f"PUT /blobs/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"y" * 100
        )
        time.sleep(0.2)  # the server is now mid-body, holding a temp file
        assert list(root.rglob(".tmp-*"))
    deadline = time.monotonic() + 5
    while list(root.rglob(".tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _files(root) == []
