"""Contribution removal on a network: what `consortium removal` proposes, approves and shows.

The contract decides (docs/contract.md, *Removal*): a proposal names a participant and the round to rewind
to; once participants holding more than two thirds of the others' stake approve, anyone executes it, the
global hash goes back to the base that round opened on, and every node (`consortium node`) replays the
training from there without the participant, round by round like any other round. This module only reads
the records and sends the three calls; each operator decides for itself whether to approve.
"""

from __future__ import annotations

from typing import Any

from web3 import Web3

from consortium.chain import History, Outcome, Removal


def first_accepted_round(hist: History, target: str) -> int | None:
    """The first round on the model's path whose accepted candidate took `target`'s update in (neither
    flagged nor excluded): a removal's default round. None when no update of it was ever taken in."""
    undone = hist.superseded(len(hist.rounds) + 1)
    for rec in hist.rounds:
        if rec.round_id in undone or rec.outcome != Outcome.ACCEPTED or target not in rec.commits:
            continue
        win = rec.candidates[rec.winner - 1]
        if target not in win.flagged_addresses and target not in win.excluded_addresses:
            return rec.round_id
    return None


def checked_address(text: str) -> str:
    """A participant named on the command line: a 0x address (checksummed), else ValueError."""
    if not Web3.is_address(text):
        raise ValueError(f"{text!r} is not an account address (0x followed by 40 hex digits)")
    return Web3.to_checksum_address(text)


def describe(rm: Removal, support: tuple[int, int] | None = None) -> str:
    """One line for a proposal: who, from which round, its state and (pending) its support."""
    head = f"removal {rm.removal_id}: {rm.target} from round {rm.from_round} (proposed by {rm.proposer})"
    if rm.after_round is not None:
        undone = f"{rm.from_round}-{rm.after_round}" if rm.after_round > rm.from_round else f"{rm.from_round}"
        return f"{head}: executed after round {rm.after_round}; undid round(s) {undone}, replayed without it"
    if support is None:
        return f"{head}: lapsed (not executed by round {rm.deadline})"
    approve, others = support
    share = approve / others if others else 0.0
    verdict = "approved: executed before the next round opens" if rm.supported(approve, others) else "pending"
    return (
        f"{head}: {verdict}; approvers hold {share:.1%} of the others' stake (needs more than 2/3), "
        f"{len(rm.approvers)} approver(s), open until round {rm.deadline}"
    )


def status(client: Any) -> list[str]:
    """Every proposal of the deployment, oldest first, as `describe` puts it."""
    pending = client.pending_removal()
    return [
        describe(rm, client.removal_support(rm) if pending and rm.removal_id == pending.removal_id else None)
        for rm in client.history().removals
    ]
