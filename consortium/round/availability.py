"""Whether a committed blob was unavailable: decided by more than one party after a retrieval window.

A store that answers 404, or a voter who says it did, is one party's claim. So:

- **the window.** A party judges a blob missing only if it stays unretrievable until the window closes
  (`window_open`: a node reads again at every block of it; the simulation reads once every proposer has
  had its turn to re-serve). Meanwhile the proposer re-uploads its blob if the store has lost it
  (`reserve`): the store is content-addressed, so a re-upload repairs it.
- **the parties.** A candidate leaves an unretrievable blob out (*excluded*, weight 0), never flags it:
  the poster's store may be the one that lies. Each voter reports in its reveal the proposer slots whose
  blob it could not retrieve (`Vote.missing`); the contract slashes an excluded proposer of the accepted
  candidate as unavailable only when at least `MIN_MISSING_REPORTS` revealed voters holding more than
  half of the revealed weight report it (`jointly_missing`, the contract's `_jointly_missing`).
  Otherwise it forfeits only the proposal bond, like any update left out.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def window_open(candidate_end: int, block: int) -> bool:
    """The retrieval window of a round: from its commits until the last block a candidate can still be
    posted in (a transaction sent after `block` lands in `block + 1`, before `candidate_end`). A node
    re-serves its own blob and re-reads a missing one at every block of it; the candidate and every
    voter's missing report rest on what is still missing once it has closed."""
    return block + 2 < candidate_end

