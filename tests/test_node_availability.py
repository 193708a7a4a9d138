"""Issue 22 item 5 with four in-process nodes: the store loses a proposer's blob right after its commit.

The proposer's node puts it back within the retrieval window (the candidate phase) and the round goes on
as if nothing happened; a proposer that no longer holds its blob is left out, reported missing by both
voters and slashed on those joint reports. The audit reaches the same verdict from the records."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_node import SMOKE, Party, _nodes_on_embedded, _restarted

from consortium.audit import AuditReport, audit_chain
from consortium.chain import Outcome, RoundState, SlashReason
from consortium.config import load_config
from consortium.store import BlobStore


@pytest.fixture(scope="module")
def sim() -> Party:
    return Party.of(load_config(preset="smoke", overrides=SMOKE))


@pytest.mark.parametrize("holds_it", [True, False], ids=["served_again", "gone"])
def test_a_lost_blob_is_served_again_or_slashed_on_joint_reports(
    tmp_path: Path, sim: Party, holds_it: bool
) -> None:
    op, paths = _nodes_on_embedded(tmp_path, sim)
    nodes = [_restarted(op, p, sim) for p in paths]
    for n in nodes:
        n.ensure_registered()
    store = BlobStore(tmp_path / "store")
    lost: str | None = None
    for _ in range(150):
        info = op.round_info()
        if info.round_id == 1 and info.state == RoundState.IDLE:
            break
        for n in nodes:
            n.step(rounds=1)
            commits = op.history().round(1).commits if info.round_id == 1 else {}
            if lost is None and commits:  # the store loses the first committed blob at once
                lost = next(iter(commits))
                blob = commits[lost].update_hash.hex()
                (store.root / blob[:2] / blob).unlink()
                if not holds_it:  # its node kept no copy either
                    next(m for m in nodes if m.address == lost).served.clear()
        op.mine(1)
    rec = op.history().round(1)
    assert lost is not None and rec.outcome == Outcome.ACCEPTED, rec
    slot = rec.proposers.index(lost)
    won = rec.candidates[rec.winner - 1]
    if holds_it:
        assert won.excluded == 0 and rec.slashes == [] and lost in rec.rewards
    else:
        assert won.excluded == 1 << slot and won.flagged == 0
        assert len(rec.votes) == 2 and all(v.missing == 1 << slot for v in rec.votes.values())
        assert [(a, r) for a, _, r in rec.slashes] == [(lost, SlashReason.UNAVAILABLE)]
    out = AuditReport()
    audit_chain(op, store, sim.cfg, out)
    assert out.ok, out.problems
