"""Whether a committed blob was unavailable: decided by more than one party after a retrieval window.

A store that answers 404, or a voter who says it did, is one party's claim. So:

- **the window.** A party judges a blob missing only if it stays unretrievable until the window ends
  (`RetrievalWindow`: the node retries until a block; the simulation asks once more after every
  proposer has had its turn to re-serve). Meanwhile the proposer re-uploads its blob if the store has
  lost it (`reserve`): the store is content-addressed, so a re-upload repairs it.
- **the parties.** A candidate leaves an unretrievable blob out (*excluded*, weight 0), never flags it:
  the poster's store may be the one that lies. Each voter reports in its reveal the proposer slots whose
  blob it could not retrieve (`Vote.missing`); the contract slashes an excluded proposer of the accepted
  candidate as unavailable only when at least `MIN_MISSING_REPORTS` revealed voters holding more than
  half of the revealed weight report it (`jointly_missing`, the contract's `_jointly_missing`).
  Otherwise it forfeits only the proposal bond, like any update left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consortium.store import BlobNotFound, BlobStore, IntegrityError, sha256_hex

# revealed voters that must report a blob missing (one party's claim never slashes): the contract's
# MIN_MISSING_REPORTS
MIN_MISSING_REPORTS = 2


def jointly_missing(votes: Iterable[Any], slot: int) -> bool:
    """The contract's rule on a round's revealed votes (`.missing` bitmask, `.weight`): at least
    MIN_MISSING_REPORTS of them, holding more than half of the revealed weight, report proposer slot
    `slot`'s blob missing."""
    votes = list(votes)
    reporters = [v.weight for v in votes if (getattr(v, "missing", 0) >> slot) & 1]
    revealed = sum(v.weight for v in votes)
    return len(reporters) >= MIN_MISSING_REPORTS and 2 * sum(reporters) > revealed


def reported_missing(rec: Any) -> set[str]:
    """The proposers of a round record whose blob its revealed voters jointly report missing."""
    votes = list(rec.votes.values())
    return {p for i, p in enumerate(rec.proposers) if jointly_missing(votes, i)}


def intact(store: BlobStore, blob: str) -> bool:
    """The store serves `blob` and its bytes hash to its name."""
    try:
        store.get(blob)
    except (BlobNotFound, IntegrityError):
        return False
    return True


def reserve(store: BlobStore, data: bytes) -> bool:
    """A proposer's half of the window: put its committed blob back if the store lost or corrupted it
    (content-addressed, so this repairs it). True when it had to."""
    if intact(store, sha256_hex(data)):
        return False
    store.put(data)
    return True


@dataclass
class RetrievalWindow:
    """A reader's half of the window: `retry()` says whether to fetch a missing blob again (after
    `wait()`), until the window closes. `closed` is the clock: a block number reached, or a deadline.

    With `closed` None the window is already over (one attempt: what a party has once every proposer
    has had its turn to re-serve, as in the simulation)."""

    closed: Callable[[], bool] | None = None
    pause_s: float = 0.5

    def retry(self) -> bool:
        if self.closed is None or self.closed():
            return False
        time.sleep(self.pause_s)
        return True


def missing_mask(unavailable: Iterable[str], slots: Mapping[str, int]) -> int:
    """The contract's bitmask of the proposer slots (address -> slot, lower-case keys) in `unavailable`."""
    return sum(1 << slots[a.lower()] for a in unavailable if a.lower() in slots)
