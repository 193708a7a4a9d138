"""Issue 22 item 3: a claimed sample count is a FedAvg weight; it is bounded by what the proposer
declared on chain before the round (its registered data size, at most CLAIM_CAP x the median)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from consortium.chain import ChainClient, EmbeddedBackend
from consortium.chain.history import Commit
from consortium.round.chain_view import CLAIM_CAP, claim_bound, read_commitments
from consortium.round.records import commit_uri, put_vector
from consortium.store import BlobStore

LAYOUT = [("w", (4,))]


def _round(
    tmp_path: Path, claims: dict[str, int], sizes: dict[str, int]
) -> tuple[SimpleNamespace, BlobStore]:
    store = BlobStore(tmp_path)
    commits = {}
    for i, (who, n) in enumerate(claims.items()):
        vec = torch.full((4,), 100.0 if who == "attacker" else float(i))
        blob = put_vector(store, vec, LAYOUT)
        commits[who] = Commit(i, bytes.fromhex(blob), commit_uri(blob, n, "cfg"), 1)
    return SimpleNamespace(commits=commits, data_sizes=sizes), store


def test_a_huge_claim_does_not_control_the_candidate(tmp_path: Path) -> None:
    claims = {"a": 10, "b": 12, "attacker": 10**17}  # the largest count a commit URI may spell
    sizes = {"a": 10, "b": 12, "attacker": 11}
    rec, store = _round(tmp_path, claims, sizes)
    committed = read_commitments(rec, store, LAYOUT)
    n = {c.participant: c.n_examples for c in committed.commitments}
    assert n == {"a": 10, "b": 12, "attacker": 11}
    share = n["attacker"] / sum(n.values())  # its FedAvg weight
    assert share < 0.5  # under the raw claims: 1 - 2e-16


def test_a_claim_too_long_to_spell_is_evidence(tmp_path: Path) -> None:
    """n = 10**150 is no count a commit URI may carry: the commitment is invalid, its proposer flagged."""
    rec, store = _round(tmp_path, {"a": 10, "attacker": 10**150}, {"a": 10, "attacker": 11})
    committed = read_commitments(rec, store, LAYOUT)
    assert [c.participant for c in committed.commitments] == ["a"]
    assert list(committed.invalid) == ["attacker"]


def test_an_undeclared_size_is_capped_at_a_multiple_of_the_median(tmp_path: Path) -> None:
    rec = SimpleNamespace(data_sizes={"a": 10, "b": 20, "c": 30, "x": 0})
    assert claim_bound(rec, "x") == CLAIM_CAP * 20
    assert claim_bound(rec, "c") == 30
    assert claim_bound(SimpleNamespace(data_sizes={}), "x") is None  # nothing declared: no bound


def test_the_declared_size_is_on_chain_and_in_the_round_snapshot() -> None:
    c = ChainClient.deploy(EmbeddedBackend(3), genesis_hash=b"\x01" * 32)
    a, b = c.backend.accounts[1:3]
    c.as_account(a).register(10**18, 120)
    c.as_account(b).register(10**18)
    assert c.participant(a).data_size == 120
    c.as_account(a).open_round(c.global_hash())
    c.as_account(b).announce_exit()  # after the opening: still in this round's snapshot
    rec = c.history().round(1)
    assert rec.data_sizes == {a: 120, b: 0}
