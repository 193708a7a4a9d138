"""A seeded embedded chain is bit-for-bit reproducible, and a run's transaction log replays exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from chain_helpers import ETH, GENESIS, N_PARTICIPANTS, PARAMS, h, play_round
from eth_account import Account

from consortium.chain import (
    ChainClient,
    ChainError,
    EmbeddedBackend,
    TxLog,
    connect,
    head,
    read_txlog,
    replay,
)
from consortium.chain.backends import GENESIS_TIMESTAMP

N_ACCOUNTS = 12
SEED = 7
ROOT = Path(__file__).resolve().parents[2]


def world(seed: int | None, txlog: TxLog | None = None) -> ChainClient:
    """Deploy and register N_PARTICIPANTS (stakes 2..9 ETH); the client acts as participant 1."""
    be = EmbeddedBackend(N_ACCOUNTS, seed=seed)
    acc = be.accounts
    c = ChainClient.deploy(be, PARAMS, GENESIS, fund=10 * ETH, account=acc[0], txlog=txlog)
    for i, a in enumerate(acc[1 : 1 + N_PARTICIPANTS]):
        c.as_account(a).register((2 + i) * ETH)
    return c.as_account(acc[1])


def block_hashes(c: ChainClient) -> list[str]:
    return [c.w3.eth.get_block(n)["hash"].hex() for n in range(c.block_number() + 1)]


def one_round(seed: int) -> tuple[list[str], list[str], list[str]]:
    c = world(seed)
    r = play_round(c)  # block-hash entropy only: commit_seed(rid) would draw fresh random seeds
    return block_hashes(c), r.proposers, r.voters


# ---------------------------------------------------------------------- determinism


def test_same_seed_same_blocks_and_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes, props, voters = one_round(SEED)
    later = int(time.time()) + 12_345_678  # five months on (eth-tester's and py-evm's clocks)
    monkeypatch.setattr(time, "time", lambda: float(later))
    monkeypatch.setattr("eth._utils.headers.eth_now", lambda: later)
    unseeded = EmbeddedBackend(2)
    unseeded.mine(1)
    assert [unseeded.w3.eth.get_block(n)["timestamp"] for n in (0, 1)] == [later, later + 1]  # it bites
    again = one_round(SEED)
    monkeypatch.undo()
    assert again == (hashes, props, voters)
    other = one_round(SEED + 1)
    assert other[0][0] == hashes[0]  # the same genesis
    assert all(a != b for a, b in zip(other[0][1:], hashes[1:], strict=True))


def test_seeded_blocks_are_one_second_apart_from_a_fixed_genesis() -> None:
    c = world(SEED)
    stamps = [c.w3.eth.get_block(n)["timestamp"] for n in range(c.block_number() + 1)]
    assert stamps == [GENESIS_TIMESTAMP + n for n in range(len(stamps))]
    unseeded = connect(n_accounts=2)
    assert unseeded.w3.eth.get_block("latest")["timestamp"] < GENESIS_TIMESTAMP  # wall clock
    assert isinstance(connect(n_accounts=2, seed=3), EmbeddedBackend)


def test_same_seed_same_head_in_another_process() -> None:
    script = (
        "import sys; sys.path.insert(0, 'tests/chain'); import test_chain_txlog as t; "
        "from consortium.chain import head; c = t.world(7); print(head(c.w3)['hash'])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == head(world(SEED).w3)["hash"]


def test_snapshot_revert_lands_on_the_straight_chain() -> None:
    """prevrandao depends on (seed, block number) only: a detour undone by a revert leaves no trace."""
    straight = world(SEED)
    play_round(straight)
    detour = world(SEED)
    snap = detour.snapshot()
    detour.top_up(ETH)
    play_round(detour, accept=False)
    detour.revert(snap)
    play_round(detour)
    assert head(detour.w3) == head(straight.w3)
    assert detour.history() == straight.history()


# ---------------------------------------------------------------------- the log and its replay


@dataclass
class Run:
    log: Path
    client: ChainClient
    head: dict[str, object]
    reverted_tx: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Deploy, register, one reverted register, a full round with seed commits and explicit vote
    salts, a detour undone by a revert, and a locally signed participant funded by a transfer."""
    path = tmp_path_factory.mktemp("txlog") / "chain.jsonl"
    with TxLog(path) as log:
        c = world(SEED, log)
        with pytest.raises(ChainError) as refused:
            c.register(2 * ETH)
        assert refused.value.reason == "already registered"
        play_round(c, seeds=3)
        snap = c.snapshot()
        c.top_up(ETH)
        c.revert(snap)
        local = Account.from_key(h("a local key"))
        c.transfer(local.address, 5 * ETH)
        c.as_account(local).register(2 * ETH)
        c.mine(3)
    assert refused.value.tx_hash is not None
    return Run(path, c, head(c.w3), refused.value.tx_hash)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, entries: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_log_holds_every_transaction_and_mine(run: Run) -> None:
    entries = read_txlog(run.log)
    txs = [e for e in entries if e["kind"] == "tx"]
    assert txs[0]["function"] == "deploy" and txs[0]["to"] is None
    assert txs[0]["contract"] == run.client.contract_address
    assert set(txs[0]["fees"]) == set(txs[1]["fees"]) == {"maxFeePerGas", "maxPriorityFeePerGas"}
    assert txs[1]["fees"]["maxPriorityFeePerGas"] == 10**9  # the client's dev-chain fee caps
    failed = [e for e in txs if e["status"] == 0]
    assert [(e["function"], e["tx_hash"]) for e in failed] == [("register", run.reverted_tx)]
    names = {e["function"] for e in txs}
    assert {"commit_seed", "reveal_seed", "draw", "commit", "commit_vote", "reveal_vote", "finalize"} <= names
    assert "raw" in txs[-1] and "raw" not in txs[-2]  # the local key's register was signed here
    assert any(e["kind"] == "mine" for e in entries) and entries[-1] == {"kind": "mine", "n": 3}
    assert sum(e["kind"] == "revert" for e in entries) == 1
    assert max(e["block"] for e in txs) + 3 == run.head["block"]


def test_replay_is_exact(run: Run) -> None:
    r = replay(run.log, n_accounts=N_ACCOUNTS, seed=SEED)
    assert r.problems == [] and r.ok
    assert r.entries == len(run.log.read_text().splitlines())
    assert head(r.backend.w3) == run.head
    assert r.client.contract_address == run.client.contract_address
    replayed, recorded = r.client.history(), run.client.history()
    assert replayed.rounds == recorded.rounds and replayed.participants == recorded.participants
    assert replayed == recorded
    assert r.client.all_participants() == run.client.all_participants()


def test_edited_reveal_is_named(run: Run, tmp_path: Path) -> None:
    entries = lines(run.log)
    n = next(i for i, e in enumerate(entries) if e.get("function") == "reveal_vote")
    data = bytes.fromhex(str(entries[n]["data"])[2:])  # selector, round id, choice, flags, salt
    choice = int.from_bytes(data[36:68], "big")
    entries[n]["data"] = "0x" + (data[:36] + (1 - choice).to_bytes(32, "big") + data[68:]).hex()
    r = replay(write(tmp_path / "edited.jsonl", entries), n_accounts=N_ACCOUNTS, seed=SEED)
    assert len(r.problems) == 1, r.problems
    problem = r.problems[0]
    assert problem.startswith(f"txlog line {n + 1}: reveal_vote from {entries[n]['from']} ")
    assert "succeeded in the run but reverts on replay: reveal does not match" in problem
    assert "tx hash" in problem and "\n" not in problem
    assert head(r.backend.w3) != run.head


def test_truncated_log_ends_elsewhere(run: Run, tmp_path: Path) -> None:
    entries = lines(run.log)
    cut = next(i for i, e in enumerate(entries) if e.get("function") == "finalize")
    r = replay(write(tmp_path / "cut.jsonl", entries[:cut]), n_accounts=N_ACCOUNTS, seed=SEED)
    assert r.problems == [] and r.entries == cut
    assert head(r.backend.w3) != run.head
    assert r.client.round_info().round_id == 1 and r.client.history().round(1).outcome is None


def test_replay_on_another_seed_is_reported(run: Run) -> None:
    r = replay(run.log, n_accounts=N_ACCOUNTS, seed=SEED + 1)
    # the same transactions on other blocks: the head always differs; when the other draw picks
    # other roles (it need not: the fixture's salts are random), the logged commits revert
    assert head(r.backend.w3) != run.head
    assert all(p.startswith("txlog line ") for p in r.problems)
    assert all("on replay" in p for p in r.problems)


def test_malformed_line_raises(run: Run, tmp_path: Path) -> None:
    text = run.log.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*text[:4], '{"kind": "tx", "from": "0x', *text[4:]]) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 5: not JSON"):
        replay(bad, n_accounts=N_ACCOUNTS, seed=SEED)
    entries = lines(run.log)
    del entries[2]["gas"]
    with pytest.raises(ValueError, match=r"line 3: missing 'gas'"):
        read_txlog(write(tmp_path / "nogas.jsonl", entries))
    with pytest.raises(ValueError, match=r"line 1: unknown kind 'reorg'"):
        read_txlog(write(tmp_path / "kind.jsonl", [{"kind": "reorg"}]))


def test_refused_deployment_is_logged(tmp_path: Path) -> None:
    be = EmbeddedBackend(2, seed=SEED)
    with TxLog(tmp_path / "deploy.jsonl") as log, pytest.raises(ChainError, match="n_voters out of range"):
        ChainClient.deploy(be, replace(PARAMS, n_voters=33), GENESIS, txlog=log)
    (entry,) = read_txlog(log.path)
    assert (entry["function"], entry["status"], entry["to"]) == ("deploy", 0, None)
    r = replay(log.path, n_accounts=2, seed=SEED)
    assert r.client is None and r.problems == [f"txlog {log.path}: no deployment to attach to"]
    assert head(r.backend.w3) == head(be.w3)
