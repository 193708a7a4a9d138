"""Typed values the client returns (the contract's tuples, named)."""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from enum import IntEnum

ETH = 10**18  # wei per ether


def wei(eth: float) -> int:
    return round(eth * ETH)


def to_eth(amount: int) -> float:
    return amount / ETH


class RoundState(IntEnum):
    IDLE = 0  # no round open: none yet, or the last one is finalized
    SEEDING = 1  # opened: seed commit and reveal, roles not drawn yet
    DRAWN = 2  # roles drawn: commit, candidate, vote commit, vote reveal, then finalize


class Outcome(IntEnum):
    REJECTED = 0
    ACCEPTED = 1
    NO_QUORUM = 2
    CANCELLED = 3  # too few eligible participants at the draw


class SlashReason(IntEnum):
    REJECTED = 1  # proposer flagged by the accepted candidate or by a majority of revealed votes
    MINORITY = 2  # voter on the losing side of a strict majority
    NO_SHOW = 3  # proposer that did not commit, voter that did not reveal
    EXCLUDED = 4  # proposal bond of an update the accepted candidate left out (a rule's or probe's verdict)
    UNAVAILABLE = 5  # an update left out whose blob the revealed voters jointly report missing


class Phase(IntEnum):
    IDLE = 0
    SEED_COMMIT = 1
    SEED_REVEAL = 2
    DRAW = 3  # seed phases over, waiting for someone to call draw()
    COMMIT = 4
    CANDIDATE = 5
    VOTE_COMMIT = 6
    VOTE_REVEAL = 7
    FINALIZE = 8  # reveal deadline passed, waiting for someone to call finalize()


@dataclass(frozen=True)
class Params:
    """Deployment parameters; lengths in blocks, fractions in basis points (1/10,000)."""

    min_stake: int = 10**18
    seed_blocks: int = 2
    commit_blocks: int = 4
    candidate_blocks: int = 2
    vote_commit_blocks: int = 2
    vote_reveal_blocks: int = 2
    exit_cooldown: int = 4
    n_proposers: int = 3
    n_voters: int = 3
    reward_per_round: int = 10**17
    slash_rejected_bps: int = 1000
    slash_minority_bps: int = 500
    slash_no_show_bps: int = 200
    quorum_bps: int = 5000
    proposal_bond_bps: int = 50
    proposers_vote: bool = False  # the proposers vote too, in seats after the voters'

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)


@dataclass(frozen=True)
class RoundInfo:
    round_id: int
    state: RoundState
    base_hash: bytes
    open_block: int
    seed_block: int
    draw_block: int
    commit_end: int
    candidate_end: int
    vote_commit_end: int
    vote_reveal_end: int
    n_proposers: int
    n_voters: int
    n_candidates: int
    voter_weight: int
    revealed_weight: int
    seed_blocks: int = 0

    def phase(self, block: int) -> Phase:
        """Which phase a transaction mined in `block` falls into."""
        if self.state == RoundState.IDLE:
            return Phase.IDLE
        if self.state == RoundState.SEEDING:
            if block < self.seed_block:
                return Phase.SEED_COMMIT
            if block <= self.seed_block + self.seed_blocks:
                return Phase.SEED_REVEAL if block > self.seed_block else Phase.SEED_COMMIT
            return Phase.DRAW
        for end, phase in (
            (self.commit_end, Phase.COMMIT),
            (self.candidate_end, Phase.CANDIDATE),
            (self.vote_commit_end, Phase.VOTE_COMMIT),
            (self.vote_reveal_end, Phase.VOTE_REVEAL),
        ):
            if block < end:
                return phase
        return Phase.FINALIZE

    @property
    def draw_from(self) -> int:
        """First block in which draw() succeeds."""
        return self.seed_block + self.seed_blocks + 1


@dataclass(frozen=True)
class ParticipantInfo:
    address: str
    stake: int
    balance: int
    index: int
    weight: int
    exit_block: int
    registered: bool
    role_round: int
    role_kind: int  # 0 none, 1 proposer, 2 voter (meaningful when role_round is the current round)
    role_slot: int
    role_status: int  # bit 1 committed, bit 2 revealed
    role_choice: int
    data_size: int = 0  # training examples declared at registration


@dataclass(frozen=True)
class Tx:
    """A mined transaction of ours that succeeded."""

    tx_hash: str
    block: int
    gas_used: int
    function: str


@dataclass(frozen=True)
class Vote:
    """A voter's ballot: choice 0 rejects, k accepts candidate k (1-based); flags is a bitmask of
    proposer slots the voter flags as bad; salt hides the ballot until the reveal; missing is a bitmask
    of the proposer slots whose committed blob the voter could not retrieve by the end of the retrieval
    window (counted at finalize: `round.availability`)."""

    choice: int
    flags: int = 0
    salt: bytes = field(default=b"\x00" * 32)
    missing: int = 0


@dataclass(frozen=True)
class BallotTx(Tx):
    """commit_vote's transaction plus the ballot (salt included) needed for the reveal."""

    vote: Vote = field(default_factory=lambda: Vote(0))
