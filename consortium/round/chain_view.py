"""A contract round record read against the blob store: its commitments and its candidate, computed
the one way the chain simulator, every node and the audit compute them.

A round record (`consortium.chain.RoundRecord`) is used by its fields only (`commits`, `seed`,
`base_hash`, `global_hash`, `outcome`), so this module needs no web3.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from consortium.round.availability import reported_missing
from consortium.round.history import PublicHistory
from consortium.round.pipeline import Candidate, candidate_marks
from consortium.round.records import (
    Commitment,
    Layout,
    ProtocolError,
    parse_uri,
    read_update,
    seed_int,
    vector_hash,
)
from consortium.store import BlobNotFound, BlobStore, IntegrityError

# what a round's inputs can fail with: a missing or corrupt blob, a malformed one, a bad probe artifact
UNREADABLE = (ProtocolError, BlobNotFound, IntegrityError, ValueError)
# a claimed sample count counts at most this many times the median data size registered on chain
CLAIM_CAP = 4
# how `check_commitment` starts the reason of a blob it could not retrieve (one party's view)
UNAVAILABLE = "unavailable"


def claim_bound(rec: Any, proposer: str) -> int | None:
    """The most examples `proposer`'s commit may claim (its FedAvg weight): its data size declared at
    registration, and at most CLAIM_CAP times the median size declared by the participants eligible when
    the round opened (both committed before the round). None when nobody declared a size."""
    sizes = getattr(rec, "data_sizes", {}) or {}
    declared = sorted(s for s in sizes.values() if s > 0)
    if not declared:
        return None
    cap = CLAIM_CAP * statistics.median_low(declared)
    own = sizes.get(proposer, 0)
    return min(own, cap) if own > 0 else cap


@dataclass
class CommittedRound:
    """A round's commits in commit order, keyed by proposer address."""

    commitments: list[Commitment] = field(default_factory=list)  # readable updates
    # address -> why its commitment is no usable update (a malformed URI, a URI naming another blob than
    # the commitment, a blob missing, corrupt, not safetensors, of the wrong tensors, shape or dtype, or
    # not finite): left out with weight 0
    invalid: dict[str, str] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)  # address -> config digest its URI names
    # the part of `invalid` that is one party's view of availability (the blob missing, or bytes not
    # matching its name, after the retrieval window): excluded, never flagged (`round.availability`).
    # The rest anyone can recompute from the commitment and the bytes: evidence, flagged.
    unavailable: set[str] = field(default_factory=set)

    def evidence(self) -> list[str]:
        """Proposers whose commitment is provably no update (flagged)."""
        return sorted(a for a in self.invalid if a not in self.unavailable)


def check_commitment(c: Any, store: BlobStore, layout: Layout) -> tuple[Commitment | None, str, str | None]:
    """One commit record (`uri`, `update_hash`) judged the one way every driver and the audit judge it:
    (the usable commitment or None, why not, the config digest its URI names). A blob missing or not
    matching its name is one party's view of availability: "why" then starts with UNAVAILABLE
    (`round.availability`). Only a store outage (StoreUnavailable) raises: it says nothing about the
    proposer."""
    try:
        blob, n, config = parse_uri(c.uri)
    except ProtocolError as e:
        return None, str(e), None
    committed = bytes(c.update_hash).hex()
    if blob != committed:
        return None, f"URI names blob {blob}, the commitment is {committed}", config
    try:
        read_update(store, blob, layout)
    except BlobNotFound:
        return None, f"{UNAVAILABLE}: committed update {blob} is missing from the store", config
    except IntegrityError as e:
        return None, f"{UNAVAILABLE}: committed update {blob} does not match its commitment: {e}", config
    except ProtocolError as e:
        return None, f"committed update is not an update of this run's adapter: {e}", config
    return Commitment("", blob, n), "", config


def read_commitments(
    rec: Any, store: BlobStore, layout: Layout, reported_missing: Iterable[str] = ()
) -> CommittedRound:
    """Every commit of the round through `check_commitment`: the usable ones become the candidate's
    inputs, every other one is left out (weight 0), never an error that voids the round: flagged when
    provably no update, excluded when unavailable after the window. `reported_missing`: proposers the
    round's voters jointly reported missing (the audit, after the fact: the records decide, not whether
    the blob came back later). A store outage (StoreUnavailable) propagates: it is not a no-show."""
    out = CommittedRound()
    reported = set(reported_missing)
    for addr, c in rec.commits.items():
        ok, why, config = check_commitment(c, store, layout)
        if ok is not None and addr in reported:
            why = f"{UNAVAILABLE}: the round's voters jointly reported committed update {ok.blob} missing"
            ok = None
        if config is not None:
            out.configs[addr] = config
        if ok is None:
            out.invalid[addr] = why
            if why.startswith(UNAVAILABLE):
                out.unavailable.add(addr)
        else:
            bound = claim_bound(rec, addr)
            n = ok.n_examples if bound is None else min(ok.n_examples, bound)
            out.commitments.append(Commitment(addr, ok.blob, n))
    return out


@dataclass
class RoundCandidate:
    """The pipeline's candidate of one chain round and what it marks each proposer as (addresses)."""

    committed: CommittedRound
    candidate: Candidate | None = None
    flagged: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    hash: str | None = None  # the candidate's blob name
    error: str | None = None  # why it cannot be computed (an unreadable global model or probe...)


def round_candidate(
    public: PublicHistory,
    rec: Any,
    committed: CommittedRound,
    slash_excluded: bool = False,
    seed: bytes | None = None,
) -> RoundCandidate:
    """The round's candidate from the public history of the rounds before it (not grown here). `seed`:
    the round seed when the caller re-derived it (the audit), else the one the draw recorded."""
    out = RoundCandidate(committed)
    if not committed.commitments:  # every commitment invalid: no candidate; marked as a candidate would
        out.flagged, out.excluded = committed.evidence(), sorted(committed.unavailable)
        return out
    try:
        cand = public.compute(rec.base_hash.hex(), committed.commitments, seed_int(seed or rec.seed or b""))
    except UNREADABLE as e:
        out.error = str(e)
        return out
    out.candidate = cand
    out.flagged, out.excluded = candidate_marks(
        cand, committed.evidence(), slash_excluded, sorted(committed.unavailable)
    )
    out.hash = vector_hash(cand.vector, public.layout)
    return out


def played(rec: Any) -> bool:
    """A round that was drawn (not cancelled): it has commits, a candidate and an outcome to fold."""
    return getattr(rec.outcome, "name", None) != "CANCELLED" and rec.seed is not None


def fold_round(public: PublicHistory, rec: Any, rc: RoundCandidate) -> None:
    """Fold a finished round into the public history: its readable updates and the probe's verdicts
    on them (whatever became of the round), then the global model's move if it was accepted."""
    if rc.committed.commitments:
        public.grow(rc.committed.commitments, rc.candidate)
    if getattr(rec.outcome, "name", None) == "ACCEPTED" and rec.global_hash is not None:
        public.moved(rec.base_hash.hex(), rec.global_hash.hex())


def regrow(public: PublicHistory, rounds: Iterable[Any], skip: Collection[int], slash_excluded: bool) -> None:
    """Grow `public` over `rounds` (finished, in order) leaving out those a removal undid (`skip`): the
    memory the pipeline keeps for the first round after a removal, as if the undone rounds had never been
    played. Each round's candidate is recomputed as every participant computed it then."""
    for rec in rounds:
        if played(rec) and rec.round_id not in skip:
            committed = read_commitments(rec, public.store, public.layout, reported_missing(rec))
            fold_round(public, rec, round_candidate(public, rec, committed, slash_excluded))
