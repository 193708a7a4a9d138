"""Issue 22 item 5: availability is decided by more than one party after a retrieval window.

The chain simulator's runner (`ChainRoundRunner`, the contract on the embedded EVM, a four-number adapter
and a quadratic held-out loss instead of a model) with a store that loses a proposer's blob right after
its commit. A blob its proposer puts back within the window is an ordinary update; one that stays gone is
left out, reported missing by every voter and slashed on those joint reports; the audit reaches the same
verdict from the records, even once the blob is back. One party's claim alone: tests/chain (contract)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from consortium.audit import AuditReport, audit_chain
from consortium.chain import ChainClient, EmbeddedBackend, Outcome, SlashReason, wei
from consortium.chain_sim import ChainRoundReport, ChainRoundRunner
from consortium.config import config_digest, load_config
from consortium.deploy import config_params
from consortium.round.pipeline import rule_from_config
from consortium.round.records import put_vector
from consortium.round.voting import VoteRule
from consortium.store import BlobStore

LAYOUT = [("w", (4,))]
TARGET = torch.full((4,), 0.5)  # every voter's held-out optimum: each update moves towards it


@dataclass
class LosingStoreRunner(ChainRoundRunner):
    """The store loses (or corrupts) the first proposer's blob right after the commits; that proposer
    serves it again in the window unless `withhold`."""

    fault: str = "deleted"
    withhold: bool = False
    every_blob: bool = False  # the store loses every proposer's blob, not only the first one's
    lost: str = ""

    def retrieval_window(self, out: ChainRoundReport, served: dict[str, bytes]) -> None:
        self.lost = out.proposers[0]
        for c in out.commitments:
            if c.participant != self.lost and not self.every_blob:
                continue
            path = self.store.root / c.blob[:2] / c.blob
            if self.fault == "deleted":
                path.unlink()
            else:
                path.write_bytes(path.read_bytes()[:-1] + b"\x00")
            if self.withhold:
                served = {n: b for n, b in served.items() if n != c.participant}
        super().retrieval_window(out, served)


def _runner(tmp_path: Path, **fault: Any) -> tuple[LosingStoreRunner, str, Any]:
    cfg = load_config(preset="smoke", overrides=["participants=6"])
    store = BlobStore(tmp_path / "store")
    genesis = put_vector(store, torch.zeros(4), LAYOUT)
    backend = EmbeddedBackend(cfg.participants + 1, seed=0)
    op = ChainClient.deploy(backend, config_params(cfg), genesis_hash=genesis, fund=wei(100))
    names = [f"org{i}" for i in range(cfg.participants)]
    runner = LosingStoreRunner(
        op,
        {n: backend.accounts[i + 1] for i, n in enumerate(names)},
        dict.fromkeys(names, "honest"),
        store,
        LAYOUT,
        rule_from_config(cfg),
        VoteRule(),
        config=config_digest(cfg),
        **fault,
    )
    runner.register_all(10.0)
    return runner, genesis, cfg


def _train(name: str, start: torch.Tensor) -> tuple[torch.Tensor, int]:
    i = int(name.removeprefix("org"))
    delta = (TARGET - start) * 0.3
    delta[i % 4] += 0.05  # distinct updates (the screen drops replays)
    return delta, 8


def _loss(name: str) -> Any:
    return lambda vec: float(((vec - TARGET) ** 2).sum())


def _round(runner: LosingStoreRunner, genesis: str) -> tuple[ChainRoundReport, Any]:
    out = runner.run_round(genesis, _train, _loss)
    return out, runner.operator.history().round(out.round_id)


@pytest.mark.parametrize("fault", ["deleted", "corrupted"])
def test_a_blob_served_again_within_the_window_is_an_ordinary_update(tmp_path: Path, fault: str) -> None:
    runner, genesis, cfg = _runner(tmp_path, fault=fault)
    out, rec = _round(runner, genesis)
    assert out.reserved == [runner.lost]
    assert rec.outcome == Outcome.ACCEPTED, rec
    assert rec.slashes == []
    assert runner.accounts[runner.lost] in rec.rewards
    report = AuditReport()
    audit_chain(runner.operator, runner.store, cfg, report)
    assert report.ok, report.problems


def test_a_blob_gone_for_the_whole_window_is_slashed_on_the_voters_joint_reports(tmp_path: Path) -> None:
    runner, genesis, cfg = _runner(tmp_path, withhold=True)
    out, rec = _round(runner, genesis)
    lost = runner.accounts[runner.lost]
    slot = rec.proposers.index(lost)
    assert rec.outcome == Outcome.ACCEPTED, rec
    won = rec.candidates[rec.winner - 1]
    assert won.excluded == 1 << slot and won.flagged == 0  # left out, not flagged: one store's view
    assert all(v.missing == 1 << slot for v in rec.votes.values()) and len(rec.votes) >= 2
    assert [(a, r) for a, _, r in rec.slashes] == [(lost, SlashReason.UNAVAILABLE)]
    assert out.votes[out.voters[0]]["missing"] == [runner.lost]
    report = AuditReport()
    audit_chain(runner.operator, runner.store, cfg, report)
    assert report.ok, report.problems
    # the proposer uploads it after the round: the records, not today's store, say it was missing
    blob = next(c.blob for c in out.commitments if c.participant == runner.lost)
    assert put_vector(runner.store, _train(runner.lost, torch.zeros(4))[0], LAYOUT) == blob
    again = AuditReport()
    audit_chain(runner.operator, runner.store, cfg, again)
    assert again.ok, again.problems



def test_a_round_whose_every_blob_is_gone_is_rejected_and_audits_clean(tmp_path: Path) -> None:
    """No candidate can be computed: every voter rejects and reports every blob missing; nothing is
    accepted, so nobody is slashed, and the audit finds the round acted on what it could not read."""
    runner, genesis, cfg = _runner(tmp_path, withhold=True, every_blob=True)
    _, rec = _round(runner, genesis)
    assert rec.outcome == Outcome.REJECTED and rec.candidates == [] and rec.slashes == []
    everyone = (1 << len(rec.proposers)) - 1
    assert all(v.missing == everyone and v.choice == 0 for v in rec.votes.values())
    report = AuditReport()
    audit_chain(runner.operator, runner.store, cfg, report)
    assert report.ok, report.problems
