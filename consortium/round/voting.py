"""How an honest voter judges a round: the candidate against the current global model on its own
held-out data, and each committed update on its own.

Pure given a loss function (the voter's held-out loss of an adapter vector): the simulation and a real
node call the same `judge`. What a voter can check without anyone's private data:
- the posted candidate is the deterministic pipeline's output (hash and flags), else it is not voted for;
- the candidate does not make its held-out loss worse than the global model's (beyond a tolerance),
  or, with `base_margin`, still leaves it clearly better than the untuned base model (for strongly
  non-IID consortia, where every round that teaches the others' domains costs some of one's own);
- no update makes its held-out loss clearly worse on its own (empty and replayed updates are already
  screened out, and so flagged, by the pipeline: `consortium.defense.screen`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from consortium.round.chain_view import RoundCandidate
from consortium.round.records import Layout, get_vector
from consortium.store import BlobStore

LossFn = Callable[[torch.Tensor], float]


@dataclass(frozen=True)
class VoteRule:
    """The thresholds of an honest voter (the config's `[chain]` fields of the same names)."""

    accept_tolerance: float = 0.02
    flag_loss_margin: float = 0.10
    base_margin: float | None = None  # also accept if loss(candidate) <= loss(base) * (1 - this)


@dataclass
class Judgement:
    """A voter's verdict: accept the candidate or not, the proposers it flags and why (for the report)."""

    accept: bool
    flags: list[str]
    loss_global: float
    loss_candidate: float | None
    reasons: dict[str, str] = field(default_factory=dict)


def update_flags(
    updates: Mapping[str, torch.Tensor],
    global_vec: torch.Tensor,
    loss: LossFn,
    loss_global: float,
    rule: VoteRule,
    loss_base: float | None = None,
) -> dict[str, str]:
    """Proposers whose update alone raises this voter's held-out loss by more than the margin, with why.
    With `base_margin`, an update that still leaves the loss clearly below the untuned base model's is
    not flagged: under non-IID data every update trained on another domain costs some of one's own."""
    floor = None if rule.base_margin is None or loss_base is None else loss_base * (1 - rule.base_margin)
    reasons: dict[str, str] = {}
    for p, u in sorted(updates.items()):
        after = loss(global_vec + u)
        if after > loss_global * (1 + rule.flag_loss_margin) and (floor is None or after > floor):
            reasons[p] = f"held-out loss {loss_global:.4f} -> {after:.4f} with this update alone"
    return reasons


def judge(
    candidate: torch.Tensor | None,
    global_vec: torch.Tensor,
    updates: Mapping[str, torch.Tensor],
    pipeline_flags: Sequence[str],
    loss: LossFn,
    rule: VoteRule,
    *,
    check_updates: bool = True,
    loss_base: float | None = None,
) -> Judgement:
    """Judge the round. `candidate` is the pipeline's recomputed candidate when one matching it was
    posted, else None (then the voter rejects). Flags: the pipeline's own plus this voter's checks.
    `loss_base` is this voter's held-out loss of the run's initial adapter (used with `base_margin`)."""
    loss_global = loss(global_vec)
    reasons = {p: "flagged by the screening pipeline" for p in pipeline_flags}
    if check_updates:
        pending = {p: u for p, u in updates.items() if p not in reasons}
        own = update_flags(pending, global_vec, loss, loss_global, rule, loss_base)
        reasons |= {p: r for p, r in own.items() if p not in reasons}
    if candidate is None:
        return Judgement(False, sorted(reasons), loss_global, None, reasons)
    loss_candidate = loss(candidate)
    accept = loss_candidate <= loss_global * (1 + rule.accept_tolerance)
    if not accept and rule.base_margin is not None and loss_base is not None:
        accept = loss_candidate <= loss_base * (1 - rule.base_margin)
    return Judgement(accept, sorted(reasons), loss_global, loss_candidate, reasons)


@dataclass
class Ballot:
    """What an honest voter sends: the judgement behind it, the candidate it names (1-based; 0 rejects),
    the contract's bitmask of the proposers it flags and of those whose blob it could not retrieve by the
    end of the retrieval window (`round.availability`)."""

    judgement: Judgement
    choice: int
    flag_mask: int
    missing_mask: int = 0


def ballot_choice(
    accept: bool, mine: tuple[bytes, int, int] | None, posted: Sequence[tuple[bytes, int, int]]
) -> int:
    """The first posted candidate equal to the voter's own recomputation (hash, flag mask, exclusion
    mask), or 0 (reject) when the voter does not accept or nobody posted it."""
    if not accept or mine is None:
        return 0
    return next((k + 1 for k, c in enumerate(posted) if tuple(c) == mine), 0)


def honest_ballot(
    rc: RoundCandidate,
    start: torch.Tensor,
    loss: LossFn,
    rule: VoteRule,
    posted: Sequence[tuple[bytes, int, int]],
    flag_mask: Callable[[Sequence[str]], int],
    proposers: Sequence[str],
    store: BlobStore,
    layout: Layout,
    *,
    loss_base: float | None = None,
    check_updates: bool = True,
) -> Ballot:
    """Judge the round's recomputed candidate (`judge`) and name the posted candidate that matches it.
    `flag_mask` turns proposer addresses into the contract's bitmask of the current round."""
    updates = {c.participant: get_vector(store, c.blob, layout) for c in rc.committed.commitments}
    verdict = judge(
        None if rc.candidate is None else rc.candidate.vector,
        start,
        updates,
        rc.flagged,
        loss,
        rule,
        check_updates=check_updates,
        loss_base=loss_base,
    )
    mine = None
    if rc.hash is not None:
        mine = (bytes.fromhex(rc.hash), flag_mask(rc.flagged), flag_mask(rc.excluded))
    drawn = {p.lower() for p in proposers}
    mask = flag_mask([p for p in verdict.flags if p.lower() in drawn])
    missing = flag_mask(sorted(a for a in rc.committed.unavailable if a.lower() in drawn))
    return Ballot(verdict, ballot_choice(verdict.accept, mine, posted), mask, missing)
