"""Where the contract runs: an in-process EVM (default, zero set-up) or any JSON-RPC node.

Both give the client the same things: a `Web3`, funded accounts the node signs for, block mining
(for tests and simulations) and state snapshots.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from web3 import Web3

REPO_ROOT = Path(__file__).resolve().parents[2]


def _lean(w3: Web3) -> Web3:
    """Drop web3 middleware this client never needs: ENS name lookups, and request validation that
    asks the node for the chain id and the latest block around every call (the client sets the
    chain id on each transaction itself)."""
    for name in ("validation", "ens_name_to_address"):
        with contextlib.suppress(ValueError):
            w3.middleware_onion.remove(name)
    return w3


class Backend(Protocol):
    """What the client needs from a chain."""

    w3: Web3
    kind: str
    dev: bool

    @property
    def accounts(self) -> list[str]: ...

    def mine(self, n: int = 1) -> None: ...

    def snapshot(self) -> Any: ...

    def revert(self, snap: Any) -> None: ...

    def close(self) -> None: ...


GENESIS_TIMESTAMP = 4_000_000_000  # 2096: past any wall clock, so every block is parent + 1 s


def _seeded_pyevm_backend(seed: int, genesis_state: Any) -> Any:
    """eth-tester's py-evm backend with nothing left to chance: a genesis timestamp ahead of the
    wall clock (py-evm stamps a block max(now, parent + 1)) and each block's `mix_hash` (the
    post-merge prevrandao, which eth-tester draws from os.urandom) a function of the seed and the
    block number. A block re-mined after a revert gets the same mix_hash, so a run with snapshots
    and reverts still ends on the chain a straight run would."""
    # py-evm and eth-tester: slow to import, and only the embedded EVM needs them (not a JSON-RPC node)
    from eth.vm.forks import ParisVM, PragueVM
    from eth.vm.forks.cancun import get_total_blob_gas
    from eth_tester import PyEVMBackend
    from eth_tester.backends.pyevm.main import ZERO_ADDRESS

    class SeededPyEVMBackend(PyEVMBackend):  # type: ignore[misc]
        def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = ZERO_ADDRESS) -> tuple[bytes, ...]:
            # PyEVMBackend.mine_blocks with the mix_hash drawn from the seed
            hashes = []
            for _ in range(num_blocks):
                kwargs: dict[str, Any] = {"coinbase": coinbase}
                vm = self.chain.get_vm()
                if isinstance(vm, ParisVM):
                    kwargs["mix_hash"] = mix_hash(seed, self.chain.header.block_number)
                if isinstance(vm, PragueVM):
                    txs = self.chain.get_block().transactions
                    kwargs["blob_gas_used"] = sum(get_total_blob_gas(tx) for tx in txs)
                hashes.append(self.chain.mine_block(**kwargs).hash)
            return tuple(hashes)

    params = PyEVMBackend.generate_genesis_params(overrides={"timestamp": GENESIS_TIMESTAMP})
    return SeededPyEVMBackend(genesis_parameters=params, genesis_state=genesis_state)


def mix_hash(seed: int, block_number: int) -> bytes:
    """The prevrandao of block `block_number` on a seeded embedded chain."""
    return random.Random(f"consortium-embedded:{seed}:{block_number}").randbytes(32)


class EmbeddedBackend:
    """py-evm through eth-tester, in this process: no node, no network.

    `seed`: make the chain deterministic. The same transactions and mines then give bit-identical
    blocks (hashes, timestamps, prevrandao) in any process. Block timestamps then start in 2096 and
    advance one second a block. None: eth-tester's own behaviour (wall-clock timestamps, random
    prevrandao)."""

    kind = "embedded"
    dev = True  # a development chain: mining on demand, snapshots, base fee only falls

    def __init__(self, n_accounts: int = 10, seed: int | None = None) -> None:
        # py-evm and eth-tester: only the embedded EVM needs them (see above)
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        self.seed = seed
        state = PyEVMBackend.generate_genesis_state(num_accounts=n_accounts)
        evm = PyEVMBackend(genesis_state=state) if seed is None else _seeded_pyevm_backend(seed, state)
        self.tester = EthereumTester(evm)
        provider = EthereumTesterProvider(self.tester)
        provider.cache_allowed_requests = True  # eth_chainId once, not twice per request
        self.w3 = _lean(Web3(provider))
        self._accounts = [Web3.to_checksum_address(a) for a in self.tester.get_accounts()]

    @property
    def accounts(self) -> list[str]:
        return list(self._accounts)

    def mine(self, n: int = 1) -> None:
        if n > 0:
            self.tester.mine_blocks(n)

    def snapshot(self) -> Any:
        return self.tester.take_snapshot()

    def revert(self, snap: Any) -> None:
        self.tester.revert_to_snapshot(snap)

    def close(self) -> None:
        pass


class RpcBackend:
    """Any Ethereum JSON-RPC node (anvil, Hardhat, geth --dev...): accounts are the node's own
    unlocked ones; mining and snapshots use the dev-node methods (anvil/Hardhat/ganache)."""

    kind = "rpc"

    def __init__(self, url: str, timeout: float = 30.0, dev: bool = False) -> None:
        self.url = url
        self.dev = dev  # True for a local dev node (anvil, Hardhat): lets the client cache fees
        # cache_allowed_requests: web3 otherwise asks eth_chainId twice for every request
        self.w3 = _lean(
            Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}, cache_allowed_requests=True))
        )
        self._accounts = [Web3.to_checksum_address(a) for a in self.w3.eth.accounts]

    @property
    def accounts(self) -> list[str]:
        return list(self._accounts)

    def _rpc(self, method: str, params: list[Any]) -> Any:
        resp = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in resp:
            raise RuntimeError(f"{method} failed: {resp['error']}")
        return resp.get("result")

    def mine(self, n: int = 1) -> None:
        if n <= 0:
            return
        try:
            self._rpc("anvil_mine", [hex(n)])
        except RuntimeError:  # not anvil: mine one block at a time
            for _ in range(n):
                self._rpc("evm_mine", [])

    def snapshot(self) -> Any:
        return self._rpc("evm_snapshot", [])

    def revert(self, snap: Any) -> None:
        if not self._rpc("evm_revert", [snap]):
            raise RuntimeError(f"evm_revert({snap}) refused")

    def close(self) -> None:
        pass


def find_anvil() -> str | None:
    """The anvil binary: $ANVIL, then the Makefile's npm install under .tools, then PATH."""
    env = os.environ.get("ANVIL")
    candidates = [env] if env else []
    tools = REPO_ROOT / ".tools" / "node_modules"
    candidates += [
        str(tools / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"),
        str(tools / ".bin" / "anvil"),
        shutil.which("anvil") or "",
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AnvilNode:
    """A local anvil started on 127.0.0.1 and stopped by `stop()` (or the context manager)."""

    binary: str
    n_accounts: int = 10
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    block_time: int | None = None  # seconds between blocks (interval mining); None: a block per transaction
    extra_args: tuple[str, ...] = ()  # more anvil flags, e.g. ("--config-out", path) for the dev keys

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> AnvilNode:
        args = [
            self.binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--accounts",
            str(self.n_accounts),
            "--hardfork",
            "cancun",
            "--gas-limit",
            "30000000",
            "--silent",
        ]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        args += list(self.extra_args)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 2}))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"anvil exited with {self.proc.returncode}: {err.strip()}")
            try:
                w3.eth.block_number  # noqa: B018 - the call is the readiness probe
                return self
            except Exception:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> AnvilNode:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connect(
    url: str | None = None, n_accounts: int = 10, dev: bool = False, seed: int | None = None
) -> Backend:
    """The embedded EVM when no URL is given (`seed`: deterministic, see EmbeddedBackend), else the
    JSON-RPC node at `url` (`dev`: a local development node such as anvil)."""
    return EmbeddedBackend(n_accounts, seed) if url is None else RpcBackend(url, dev=dev)
