"""The round protocol: open -> train -> commit -> aggregate -> finalize, over a ledger and a blob store.

The ledger is where the round's records live. `MemoryLedger` is the centralised FedAvg baseline (every
participant proposes, every candidate is accepted); the contract client of the chain issue implements
the same `Ledger` interface so the same code drives a decentralised round. The candidate aggregate is a
pure function of public records (`compute_candidate`), so anyone holding the store can recompute it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from consortium.defense.aggregators import aggregate
from consortium.model import flat_to_state, state_to_flat
from consortium.store import BlobStore

Layout = Sequence[tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Commitment:
    """A participant's committed update: who, which blob, and the sample count it claims."""

    participant: str
    blob: str
    n_examples: int


@dataclass
class RoundRecord:
    """Everything needed to recompute and audit one round."""

    round: int
    global_in: str
    commitments: list[Commitment] = field(default_factory=list)
    candidate: str | None = None
    accepted: bool | None = None
    global_out: str | None = None


class Ledger(Protocol):
    """What the round needs from a ledger; the in-memory one here, the contract in `consortium.chain`."""

    def open_round(self, global_hash: str) -> RoundRecord: ...
    def proposers(self, rnd: RoundRecord, candidates: Sequence[str]) -> list[str]: ...
    def commit(self, rnd: RoundRecord, commitment: Commitment) -> None: ...
    def post_candidate(self, rnd: RoundRecord, candidate: str) -> None: ...
    def finalize(self, rnd: RoundRecord) -> str: ...


class ProtocolError(RuntimeError):
    """A step out of order or a record that breaks the protocol (double commit, missing blob, ...)."""


@dataclass
class MemoryLedger:
    """Centralised FedAvg baseline: everyone proposes and the candidate is always accepted."""

    rounds: list[RoundRecord] = field(default_factory=list)

    def open_round(self, global_hash: str) -> RoundRecord:
        if self.rounds and self.rounds[-1].global_out is None:
            raise ProtocolError(f"round {self.rounds[-1].round} is still open")
        rnd = RoundRecord(round=len(self.rounds), global_in=global_hash)
        self.rounds.append(rnd)
        return rnd

    def proposers(self, rnd: RoundRecord, candidates: Sequence[str]) -> list[str]:
        return list(candidates)

    def commit(self, rnd: RoundRecord, commitment: Commitment) -> None:
        if any(c.participant == commitment.participant for c in rnd.commitments):
            raise ProtocolError(f"round {rnd.round}: {commitment.participant} already committed")
        rnd.commitments.append(commitment)

    def post_candidate(self, rnd: RoundRecord, candidate: str) -> None:
        rnd.candidate = candidate

    def finalize(self, rnd: RoundRecord) -> str:
        if rnd.candidate is None:
            raise ProtocolError(f"round {rnd.round}: no candidate posted")
        rnd.accepted = True
        rnd.global_out = rnd.candidate
        return rnd.global_out


def put_vector(store: BlobStore, vec: torch.Tensor, layout: Layout) -> str:
    """Store an adapter vector (global or update) as a safetensors blob named by its sha256."""
    return store.put_tensors(flat_to_state(vec, layout))


def get_vector(store: BlobStore, digest: str, layout: Layout) -> torch.Tensor:
    """Read a verified blob back into a vector, refusing wrong tensor names, shapes or dtype."""
    state = store.get_tensors(digest)
    for name, t in sorted(state.items()):
        if t.dtype != torch.float32:
            raise ProtocolError(f"blob {digest}: {name} is {t.dtype}, expected torch.float32")
    try:
        return state_to_flat(state, layout)
    except ValueError as e:
        raise ProtocolError(f"blob {digest}: {e}") from None


def compute_candidate(
    store: BlobStore,
    layout: Layout,
    global_in: str,
    commitments: Sequence[Commitment],
    aggregator: str,
    weighting: Literal["samples", "uniform"],
    server_lr: float = 1.0,
) -> torch.Tensor:
    """The candidate global vector: `global_in + server_lr * aggregate(updates, weights)`.

    Pure in its inputs. `server_lr` is FedOpt's server step size (Reddi et al., 2021): 1.0 is plain
    FedAvg; above 1 it offsets the dilution of averaging updates that point in different directions.
    """
    if not commitments:
        raise ProtocolError("no commitments to aggregate")
    ordered = sorted(commitments, key=lambda c: c.participant)
    updates = torch.stack([get_vector(store, c.blob, layout) for c in ordered])
    if weighting == "samples":
        weights = torch.tensor([float(c.n_examples) for c in ordered], dtype=torch.float64)
    else:
        weights = torch.ones(len(ordered), dtype=torch.float64)
    step = aggregate(aggregator, updates, weights)
    if server_lr != 1.0:
        step = step * server_lr
    return get_vector(store, global_in, layout) + step


TrainFn = Callable[[str, torch.Tensor], tuple[torch.Tensor, int]]


@dataclass
class RoundRunner:
    """Drives rounds over a ledger: the same code for the in-process simulation and, later, real nodes."""

    ledger: Ledger
    store: BlobStore
    layout: Layout
    aggregator: str
    weighting: Literal["samples", "uniform"]
    server_lr: float = 1.0

    def run_round(self, global_hash: str, participants: Sequence[str], train: TrainFn) -> RoundRecord:
        """One round; `train(participant, global_vector) -> (delta, n_examples)` is the local step."""
        rnd = self.ledger.open_round(global_hash)
        start = get_vector(self.store, global_hash, self.layout)
        for pid in self.ledger.proposers(rnd, participants):
            delta, n = train(pid, start)
            blob = put_vector(self.store, delta, self.layout)
            self.ledger.commit(rnd, Commitment(participant=pid, blob=blob, n_examples=n))
        cand = compute_candidate(
            self.store,
            self.layout,
            rnd.global_in,
            rnd.commitments,
            self.aggregator,
            self.weighting,
            self.server_lr,
        )
        self.ledger.post_candidate(rnd, put_vector(self.store, cand, self.layout))
        self.ledger.finalize(rnd)
        return rnd
