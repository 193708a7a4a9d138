"""history(): the whole ledger rebuilt from the contract's events alone.

Logs are read incrementally (a cursor, never from block 0 again): eth-tester's get_logs over the
whole chain costs O(blocks²).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3

from .types import Outcome, SlashReason


@dataclass(frozen=True)
class Event:
    name: str
    args: dict[str, Any]
    block: int
    log_index: int
    tx_hash: str


@dataclass
class ParticipantRecord:
    address: str
    index: int
    stake: int = 0
    balance: int = 0
    registered: bool = False
    exiting: bool = False
    data_size: int = 0  # training examples declared at registration
    removed: bool = False  # by an executed removal: never registers again

    def weight(self, min_stake: int) -> int:
        """What the contract's draw tree holds for this participant."""
        eligible = self.registered and not self.exiting and self.stake >= min_stake
        return self.stake if eligible else 0


@dataclass(frozen=True)
class Commit:
    slot: int
    update_hash: bytes
    uri: str
    block: int


@dataclass(frozen=True)
class PostedCandidate:
    """A candidate as the chain records its posting (not `round.pipeline.Candidate`, the computed one)."""

    number: int  # 1-based: what a vote's choice refers to
    poster: str
    candidate_hash: bytes
    flagged: int  # bitmask of proposer slots: evidence, slashed if this candidate wins
    flagged_addresses: tuple[str, ...]
    excluded: int = 0  # bitmask of proposer slots left out without evidence: not rewarded
    excluded_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class RevealedVote:
    choice: int
    flags: int
    weight: int
    missing: int = 0  # proposer slots whose blob this voter reports missing after the retrieval window


@dataclass
class RoundRecord:
    round_id: int
    base_hash: bytes
    opener: str
    open_block: int
    seed_block: int
    seed_commits: dict[str, bytes] = field(default_factory=dict)
    seed_reveals: dict[str, bytes] = field(default_factory=dict)
    seed: bytes | None = None
    draw_block: int | None = None
    proposers: list[str] = field(default_factory=list)
    voters: list[str] = field(default_factory=list)
    deadlines: dict[str, int] = field(default_factory=dict)
    owners: list[str] = field(default_factory=list)  # participant index i+1 -> address, at the opening
    # the draw's stake snapshot by index: the weights when the round opened (a stake change made
    # later counts from the next round on, as in the contract)
    weights: list[int] = field(default_factory=list)
    # data sizes declared by the participants eligible at the opening (bounds on claimed sample counts)
    data_sizes: dict[str, int] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    candidates: list[PostedCandidate] = field(default_factory=list)
    vote_commits: dict[str, bytes] = field(default_factory=dict)
    votes: dict[str, RevealedVote] = field(default_factory=dict)
    outcome: Outcome | None = None
    winner: int = 0
    global_hash: bytes | None = None
    accept_weight: int = 0
    revealed_weight: int = 0
    rewards: dict[str, int] = field(default_factory=dict)
    slashes: list[tuple[str, int, SlashReason]] = field(default_factory=list)


@dataclass
class Removal:
    """A proposal to rebuild the global model without `target` from round `from_round` on
    (docs/contract.md, *Removal*), and what became of it."""

    removal_id: int
    target: str
    from_round: int
    proposer: str
    deadline: int  # the last round it can be approved in or executed after
    approvers: list[str] = field(default_factory=list)
    after_round: int | None = None  # executed after this round (the last one opened); None: not executed
    base_hash: bytes | None = None  # the global hash it set: round `from_round`'s base
    approve_weight: int = 0  # as the contract summed them at execution
    others_weight: int = 0
    # the same sums from the events before the execution (the audit compares the two)
    replayed_approve: int = 0
    replayed_others: int = 0

    def support(self, weights: Mapping[str, int]) -> tuple[int, int]:
        """(the approvers' weight, the weight of everyone but the target) for each participant's `weights`:
        what `execute_removal` sums, so the client, the history and the dashboard sum it the same way."""
        return sum(weights.get(a, 0) for a in self.approvers), sum(weights.values()) - weights.get(
            self.target, 0
        )

    def supported(self, approve: int, others: int) -> bool:
        """The contract's threshold: approvers hold more than two thirds of the others' weight."""
        return approve * 3 > others * 2


@dataclass
class History:
    events: list[Event]
    participants: dict[str, ParticipantRecord]
    rounds: list[RoundRecord]
    reward_pool: int
    global_hash: bytes
    min_stake: int
    genesis: bytes = b"\x00" * 32  # the deployment's initial global model (fixed in the constructor)
    # seed commitments made (in a reveal) for a round not opened yet: round id -> who -> commitment
    early_seed_commits: dict[int, dict[str, bytes]] = field(default_factory=dict)
    removals: list[Removal] = field(default_factory=list)  # removal id k at k - 1

    def round(self, round_id: int) -> RoundRecord:
        return self.rounds[round_id - 1]

    def superseded(self, round_id: int) -> frozenset[int]:
        """The rounds that removals carried out before round `round_id` opened undid (`from_round`
        through the last round before each): the pipeline's memory for `round_id` leaves them out,
        as if they had never been played."""
        out: set[int] = set()
        for r in self.removals:
            if r.after_round is not None and r.after_round < round_id:
                out.update(range(r.from_round, r.after_round + 1))
        return frozenset(out)

    @property
    def total_stake(self) -> int:
        return sum(p.stake for p in self.participants.values())

    @property
    def total_balance(self) -> int:
        return sum(p.balance for p in self.participants.values())


class HistoryReader:
    """Keeps decoded events of one deployment and a cursor past the last block read."""

    def __init__(self, w3: Web3, contract: Any, from_block: int) -> None:
        self.w3 = w3
        self.contract = contract
        self.from_block = from_block
        self.next_block = from_block
        self.events: list[Event] = []
        self._by_topic = {}
        for item in contract.abi:
            if item.get("type") == "event":
                ev = contract.events[item["name"]]()
                self._by_topic[bytes(Web3.to_bytes(hexstr=ev.topic))] = ev

    def truncate(self, head: int) -> None:
        """Forget events above `head` (after a snapshot revert the chain re-grows from there)."""
        self.events = [e for e in self.events if e.block <= head]
        self.next_block = min(self.next_block, head + 1)

    def fetch(self) -> list[Event]:
        head = self.w3.eth.block_number
        if head >= self.next_block:
            logs = self.w3.eth.get_logs(
                {"address": self.contract.address, "fromBlock": self.next_block, "toBlock": head}
            )
            for log in logs:
                ev = self._by_topic.get(bytes(log["topics"][0]))
                if ev is None:
                    continue
                d = ev.process_log(log)
                self.events.append(
                    Event(
                        d["event"],
                        dict(d["args"]),
                        int(d["blockNumber"]),
                        int(d["logIndex"]),
                        Web3.to_hex(d["transactionHash"]),
                    )
                )
            self.next_block = head + 1
        return self.events

    def history(self) -> History:
        return build_history(self.fetch())


def build_history(events: list[Event]) -> History:
    """Replay events in order; the balances follow the contract's own arithmetic."""
    h = History(list(events), {}, [], 0, b"\x00" * 32, 0)
    for e in events:
        handler = _HANDLERS.get(e.name)
        if handler is not None:
            handler(h, {**e.args, "_block": e.block})
    return h


def _p(h: History, who: str) -> ParticipantRecord:
    return h.participants[Web3.to_checksum_address(who)]


def _deployed(h: History, a: dict[str, Any]) -> None:
    h.global_hash = h.genesis = bytes(a["genesis_hash"])
    h.min_stake = a["min_stake"]


def _registered(h: History, a: dict[str, Any]) -> None:
    who = Web3.to_checksum_address(a["who"])
    rec = h.participants.setdefault(who, ParticipantRecord(who, a["index"]))
    rec.stake, rec.registered, rec.exiting = a["stake"], True, False
    rec.data_size = a["data_size"]


def _topped_up(h: History, a: dict[str, Any]) -> None:
    _p(h, a["who"]).stake = a["stake"]


def _exit_announced(h: History, a: dict[str, Any]) -> None:
    _p(h, a["who"]).exiting = True


def _exit_completed(h: History, a: dict[str, Any]) -> None:
    rec = _p(h, a["who"])
    rec.balance += a["amount"]
    rec.stake, rec.registered, rec.exiting = 0, False, False


def _withdrawn(h: History, a: dict[str, Any]) -> None:
    _p(h, a["who"]).balance -= a["amount"]


def _funded(h: History, a: dict[str, Any]) -> None:
    h.reward_pool += a["amount"]


def _round_opened(h: History, a: dict[str, Any]) -> None:
    r = RoundRecord(a["round_id"], bytes(a["base_hash"]), a["opener"], a["_block"], a["seed_block"])
    by_index = sorted(h.participants.values(), key=lambda p: p.index)
    r.owners = [p.address for p in by_index]
    r.weights = [p.weight(h.min_stake) for p in by_index]
    r.seed_commits = h.early_seed_commits.pop(r.round_id, {})
    r.data_sizes = {p.address: p.data_size for p, w in zip(by_index, r.weights, strict=True) if w > 0}
    h.rounds.append(r)


def _seed_committed(h: History, a: dict[str, Any]) -> None:
    if a["round_id"] > len(h.rounds):  # made with the previous round's reveal
        h.early_seed_commits.setdefault(a["round_id"], {})[a["who"]] = bytes(a["commitment"])
        return
    h.round(a["round_id"]).seed_commits[a["who"]] = bytes(a["commitment"])


def _seed_revealed(h: History, a: dict[str, Any]) -> None:
    h.round(a["round_id"]).seed_reveals[a["who"]] = bytes(a["seed"])


def _round_drawn(h: History, a: dict[str, Any]) -> None:
    r = h.round(a["round_id"])
    r.seed, r.draw_block = bytes(a["seed"]), a["_block"]
    r.proposers, r.voters = list(a["proposers"]), list(a["voters"])
    r.deadlines = {k: a[k] for k in ("commit_end", "candidate_end", "vote_commit_end", "vote_reveal_end")}


def _update_committed(h: History, a: dict[str, Any]) -> None:
    h.round(a["round_id"]).commits[a["who"]] = Commit(
        a["slot"], bytes(a["update_hash"]), a["uri"], a["_block"]
    )


def _candidate_posted(h: History, a: dict[str, Any]) -> None:
    r = h.round(a["round_id"])

    def slots(mask: int) -> tuple[str, ...]:
        return tuple(p for i, p in enumerate(r.proposers) if (mask >> i) & 1)

    r.candidates.append(
        PostedCandidate(
            a["candidate"],
            a["who"],
            bytes(a["candidate_hash"]),
            a["flagged"],
            slots(a["flagged"]),
            a["excluded"],
            slots(a["excluded"]),
        )
    )


def _vote_committed(h: History, a: dict[str, Any]) -> None:
    h.round(a["round_id"]).vote_commits[a["who"]] = bytes(a["commitment"])


def _vote_revealed(h: History, a: dict[str, Any]) -> None:
    h.round(a["round_id"]).votes[a["who"]] = RevealedVote(
        a["choice"], a["flags"], a["weight"], a.get("missing", 0)
    )


def _rewarded(h: History, a: dict[str, Any]) -> None:
    _p(h, a["who"]).balance += a["amount"]
    h.reward_pool -= a["amount"]
    rewards = h.round(a["round_id"]).rewards
    rewards[a["who"]] = rewards.get(a["who"], 0) + a["amount"]


def _slashed(h: History, a: dict[str, Any]) -> None:
    _p(h, a["who"]).stake -= a["amount"]
    h.reward_pool += a["amount"]
    h.round(a["round_id"]).slashes.append((a["who"], a["amount"], SlashReason(a["reason"])))


def _round_finalized(h: History, a: dict[str, Any]) -> None:
    r = h.round(a["round_id"])
    r.outcome, r.winner = Outcome(a["outcome"]), a["winner"]
    r.global_hash = bytes(a["global_hash"])
    r.accept_weight, r.revealed_weight = a["accept_weight"], a["revealed_weight"]
    h.global_hash = r.global_hash


def _removal_proposed(h: History, a: dict[str, Any]) -> None:
    who = Web3.to_checksum_address
    h.removals.append(
        Removal(a["removal_id"], who(a["target"]), a["from_round"], who(a["proposer"]), a["deadline"])
    )


MAX_APPROVERS = 128  # Consortium.vy: a full list first drops the approvals whose stake has left


def _removal_approved(h: History, a: dict[str, Any]) -> None:
    r = h.removals[a["removal_id"] - 1]
    if len(r.approvers) == MAX_APPROVERS:  # as the contract: keep those that still weigh something
        r.approvers = [x for x in r.approvers if h.participants[x].weight(h.min_stake) > 0]
    r.approvers.append(Web3.to_checksum_address(a["who"]))


def _removal_executed(h: History, a: dict[str, Any]) -> None:
    r = h.removals[a["removal_id"] - 1]
    r.after_round, r.base_hash = len(h.rounds), bytes(a["base_hash"])
    r.approve_weight, r.others_weight = a["approve_weight"], a["others_weight"]
    # the target's exit was announced in the same call, before this event: its weight is already 0
    weights = {p.address: p.weight(h.min_stake) for p in h.participants.values()}
    r.replayed_approve, r.replayed_others = r.support(weights)
    _p(h, r.target).removed = True
    h.global_hash = r.base_hash


_HANDLERS = {
    "Deployed": _deployed,
    "Registered": _registered,
    "ToppedUp": _topped_up,
    "ExitAnnounced": _exit_announced,
    "ExitCompleted": _exit_completed,
    "Withdrawn": _withdrawn,
    "Funded": _funded,
    "RoundOpened": _round_opened,
    "SeedCommitted": _seed_committed,
    "SeedRevealed": _seed_revealed,
    "RoundDrawn": _round_drawn,
    "UpdateCommitted": _update_committed,
    "CandidatePosted": _candidate_posted,
    "VoteCommitted": _vote_committed,
    "VoteRevealed": _vote_revealed,
    "Rewarded": _rewarded,
    "Slashed": _slashed,
    "RoundFinalized": _round_finalized,
    "RemovalProposed": _removal_proposed,
    "RemovalApproved": _removal_approved,
    "RemovalExecuted": _removal_executed,
}
