"""The centralised round (`protocol = "central"`): open -> train -> commit -> aggregate -> finalize,
over an in-memory ledger and a blob store.

`MemoryLedger` is the centralised baseline: every participant proposes and every candidate is accepted.
The decentralised round does not go through this ledger: `consortium.chain_sim` drives the contract
(`consortium.chain.ChainClient`), whose interface is the contract's own. Both compute the candidate with
the same pure function of public records (`consortium.round.pipeline.compute_candidate`), so anyone
holding the store can recompute it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from consortium.defense import needs
from consortium.round.history import PublicHistory
from consortium.round.pipeline import AggregationRule, Candidate
from consortium.round.records import Commitment, Layout, ProtocolError, get_vector, put_vector
from consortium.store import BlobStore


@dataclass
class LedgerRound:
    """One round of the in-memory ledger: everything needed to recompute it."""

    round: int
    global_in: str
    seed: int = 0  # the round's public randomness (defence noise)
    commitments: list[Commitment] = field(default_factory=list)
    root: str | None = None  # FLTrust's root update, committed like any other update
    evidence: dict[str, str] = field(default_factory=dict)  # probe evidence blobs (step / shadow level)
    candidate: str | None = None
    flagged: list[str] = field(default_factory=list)
    accepted: bool | None = None
    global_out: str | None = None


class Ledger(Protocol):
    """What `RoundRunner` needs from a ledger (`MemoryLedger`; a test may pass its own)."""

    def open_round(self, global_hash: str) -> LedgerRound: ...
    def proposers(self, rnd: LedgerRound, candidates: Sequence[str]) -> list[str]: ...
    def commit(self, rnd: LedgerRound, commitment: Commitment) -> None: ...
    def post_candidate(self, rnd: LedgerRound, candidate: str) -> None: ...
    def finalize(self, rnd: LedgerRound) -> str: ...


def round_seed(global_hash: str, rnd: int) -> int:
    """Public randomness of the in-memory ledger: fixed by the round's input model, unknown before it."""
    return int.from_bytes(hashlib.sha256(f"{global_hash}:{rnd}".encode()).digest()[:8], "big")


@dataclass
class MemoryLedger:
    """Centralised FedAvg baseline: everyone proposes and the candidate is always accepted."""

    rounds: list[LedgerRound] = field(default_factory=list)

    def open_round(self, global_hash: str) -> LedgerRound:
        if self.rounds and self.rounds[-1].global_out is None:
            raise ProtocolError(f"round {self.rounds[-1].round} is still open")
        rnd = LedgerRound(
            round=len(self.rounds), global_in=global_hash, seed=round_seed(global_hash, len(self.rounds))
        )
        self.rounds.append(rnd)
        return rnd

    def proposers(self, rnd: LedgerRound, candidates: Sequence[str]) -> list[str]:
        return list(candidates)

    def commit(self, rnd: LedgerRound, commitment: Commitment) -> None:
        if any(c.participant == commitment.participant for c in rnd.commitments):
            raise ProtocolError(f"round {rnd.round}: {commitment.participant} already committed")
        rnd.commitments.append(commitment)

    def post_candidate(self, rnd: LedgerRound, candidate: str) -> None:
        rnd.candidate = candidate

    def finalize(self, rnd: LedgerRound) -> str:
        if rnd.candidate is None:
            raise ProtocolError(f"round {rnd.round}: no candidate posted")
        rnd.accepted = True
        rnd.global_out = rnd.candidate
        return rnd.global_out


TrainFn = Callable[[str, torch.Tensor], tuple[torch.Tensor, int]]
RootFn = Callable[[int, torch.Tensor], torch.Tensor]


def prefetch(train: TrainFn, proposers: Sequence[str], start: torch.Tensor) -> None:
    """Tell a train function that may start them all at once (Ray) whom this round's `train` calls are
    for; it is optional (`train.prefetch`), and commits still happen one by one, in the ledger's order."""
    ahead = getattr(train, "prefetch", None)
    if ahead is not None:
        ahead(list(proposers), start)


@dataclass
class RoundRunner:
    """Drives the centralised rounds of the in-process simulation over a ledger.

    `root` trains FLTrust's root update from the round's start vector on the public root set; it is
    stored and recorded like a commitment so the candidate stays a pure function of public records.
    What earlier rounds contribute (FoolsGold's sums, the last global step, probe verdicts) is
    `public`, grown exactly as the audit grows it.
    """

    ledger: Ledger
    store: BlobStore
    layout: Layout
    rule: AggregationRule = field(default_factory=AggregationRule)
    root: RootFn | None = None
    evidence: Callable[[str], torch.Tensor | None] | None = None  # a proposer's step / shadow snapshots

    def __post_init__(self) -> None:
        self.public = PublicHistory(self.store, self.layout, self.rule)

    def run_round(
        self, global_hash: str, participants: Sequence[str], train: TrainFn
    ) -> tuple[LedgerRound, Candidate]:
        """One round; `train(participant, global_vector) -> (delta, n_examples)` is the local step."""
        rnd = self.ledger.open_round(global_hash)
        start = get_vector(self.store, global_hash, self.layout)
        proposers = self.ledger.proposers(rnd, participants)
        prefetch(train, proposers, start)
        for pid in proposers:
            delta, n = train(pid, start)
            blob = put_vector(self.store, delta, self.layout)
            self.ledger.commit(rnd, Commitment(participant=pid, blob=blob, n_examples=n))
            shots = None if self.evidence is None else self.evidence(pid)
            if shots is not None:  # committed with the update, so the probe's input is a public record
                rnd.evidence[pid] = self.store.put_tensors({"snapshots": shots.contiguous()})
        if needs(self.rule.aggregator).root:
            if self.root is None:
                raise ProtocolError(
                    f"aggregator {self.rule.aggregator!r} needs a root update function (public root set)"
                )
            rnd.root = put_vector(self.store, self.root(rnd.round, start), self.layout)
        cand = self.public.candidate(
            rnd.global_in, rnd.commitments, rnd.seed, root=rnd.root, evidence=rnd.evidence
        )
        rnd.flagged = cand.flagged
        self.ledger.post_candidate(rnd, put_vector(self.store, cand.vector, self.layout))
        self.public.moved(rnd.global_in, self.ledger.finalize(rnd))
        return rnd, cand
