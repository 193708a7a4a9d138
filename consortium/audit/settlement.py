"""The contract's tally and settlement rules, recomputed from a round's record (not its events):
who had quorum and majority, who is slashed and rewarded, and so every stake and balance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consortium.audit.report import AuditReport
from consortium.round.availability import jointly_missing

BPS = 10_000


@dataclass(frozen=True)
class Tally:
    """The revealed votes of a round as the contract's finalize counts them."""

    revealed: int  # weight of all revealed votes
    quorum: bool
    winner: int  # the accepted candidate (1-based), 0 if none: see `of`

    @classmethod
    def of(cls, rec: Any, quorum_bps: int) -> Tally:
        """A candidate wins with quorum, a strict majority of the revealed weight, and more than a
        third of the weight in the round's draw (`rec.weights`, the stake snapshot)."""
        weight = dict(zip(rec.owners, rec.weights, strict=True))
        revealed = sum(v.weight for v in rec.votes.values())
        quorum = revealed > 0 and revealed * BPS >= quorum_bps * sum(weight.get(v, 0) for v in rec.voters)
        tallies: dict[int, int] = {}
        for v in rec.votes.values():
            tallies[v.choice] = tallies.get(v.choice, 0) + v.weight
        total = sum(rec.weights)
        won = [k for k, t in tallies.items() if k > 0 and t * 2 > revealed and t * 3 > total]
        return cls(revealed, quorum, won[0] if quorum and won else 0)


def fmt_votes(rec: Any, who: Callable[[str], str]) -> str:
    return "{" + ", ".join(f"{who(v)}: {b.choice}" for v, b in rec.votes.items()) + "}"


# the contract's events that move stake, balance or pool outside a round's settlement
DEPOSITS = ("Registered", "ToppedUp", "ExitCompleted", "Withdrawn", "Funded")


@dataclass
class Ledger:
    """Stakes, balances and the reward pool re-derived from the contract's rules (not its events).

    Deposits and payouts (register, top-up, exit, withdraw, fund) are folded in chain order, each up
    to the round settled next (`until`), so a participant who joins, tops up or leaves mid-run is
    accounted at the moment it did."""

    stake: dict[str, int]
    balance: dict[str, int]
    pool: int
    events: list[Any] = field(default_factory=list)
    cursor: int = 0  # events[:cursor] are folded in

    @classmethod
    def from_history(cls, hist: Any) -> Ledger:
        """An empty ledger over the deployment's events (folded in by `until` and `settle`)."""
        return cls({}, {}, 0, list(hist.events))

    def until(self, round_id: int | None, r: str, who: Callable[[str], str], out: AuditReport) -> None:
        """Fold the deposits and payouts before round `round_id`'s finalization (None: all of them)."""
        while self.cursor < len(self.events):
            e = self.events[self.cursor]
            if round_id is not None and e.name == "RoundFinalized" and e.args["round_id"] == round_id:
                return
            self.cursor += 1
            if e.name in DEPOSITS:
                self._deposit(e, r, who, out)

    def _deposit(self, e: Any, r: str, who: Callable[[str], str], out: AuditReport) -> None:
        a = e.args
        if e.name == "Funded":
            self.pool += a["amount"]
            return
        p = a["who"]
        self.balance.setdefault(p, 0)
        if e.name == "Registered":  # a first join, or a re-join after a completed exit (stake 0)
            self.stake[p] = self.stake.get(p, 0) + a["stake"]
            want = a["stake"]
        elif e.name == "ToppedUp":
            self.stake[p] = self.stake.get(p, 0) + a["amount"]
            want = a["stake"]
        elif e.name == "ExitCompleted":
            want, got = self.stake.get(p, 0), a["amount"]
            self.balance[p] += want
            self.stake[p] = 0
            if got != want:
                out.problems.append(
                    f"block {e.block}: {who(p)} left with {got} wei, the rules give its stake {want} wei"
                )
            return
        else:  # Withdrawn
            self.balance[p] -= a["amount"]
            if self.balance[p] < 0:
                out.problems.append(f"block {e.block}: {who(p)} withdrew {a['amount']} wei, more than it had")
            return
        if self.stake[p] != want:
            out.problems.append(
                f"block {e.block}: {who(p)}'s stake after {e.name} is {want} wei on chain, "
                f"the rules give {self.stake[p]} wei"
            )

    def _slash(self, who: str, bps: int) -> int:
        amount = self.stake.get(who, 0) * bps // BPS
        self.stake[who] -= amount
        return amount

    def settle(self, rec: Any, params: Any, r: str, who: Callable[[str], str], out: AuditReport) -> None:
        """The contract's finalize, recomputed: slashes in slot order, then equal reward shares."""
        from consortium.chain import Outcome, SlashReason  # web3: see audit_run

        self.until(rec.round_id, r, who, out)
        if rec.outcome in (None, Outcome.CANCELLED):
            return
        tally = Tally.of(rec, params.quorum_bps)
        winner = tally.winner
        won = rec.candidates[rec.winner - 1] if rec.winner > 0 else None
        winner_flags, winner_excluded = (won.flagged, won.excluded) if won else (0, 0)
        slashes: list[tuple[str, int, SlashReason]] = []
        rewarded: list[str] = []
        for i, p in enumerate(rec.proposers):  # voters' own flags never slash: a private judgement
            if p not in rec.commits:
                slashes.append((p, self._slash(p, params.slash_no_show_bps), SlashReason.NO_SHOW))
            elif (winner_flags >> i) & 1:
                slashes.append((p, self._slash(p, params.slash_rejected_bps), SlashReason.REJECTED))
            elif rec.outcome == Outcome.ACCEPTED and not (winner_excluded >> i) & 1:
                rewarded.append(p)
            elif rec.outcome == Outcome.ACCEPTED and jointly_missing(rec.votes.values(), i):
                slashes.append((p, self._slash(p, params.slash_rejected_bps), SlashReason.UNAVAILABLE))
            elif rec.outcome == Outcome.ACCEPTED:  # the proposal bond: only inclusion returns it
                bond = getattr(params, "proposal_bond_bps", 0)
                slashes.append((p, self._slash(p, bond), SlashReason.EXCLUDED))
        withheld_bps = max(params.slash_no_show_bps, params.slash_minority_bps)  # withholding must not pay
        for v in rec.voters:
            if v not in rec.votes:
                slashes.append((v, self._slash(v, withheld_bps), SlashReason.NO_SHOW))
            elif winner:
                if rec.votes[v].choice == winner:
                    rewarded.append(v)
                elif rec.votes[v].choice != 0:  # another candidate than the recomputed winner
                    slashes.append((v, self._slash(v, params.slash_minority_bps), SlashReason.MINORITY))
        slashes = [s for s in slashes if s[1] > 0]
        self.pool += sum(s[1] for s in slashes)
        rewards: dict[str, int] = {}
        if rewarded:
            share = min(params.reward_per_round, self.pool) // len(rewarded)
            if share > 0:
                for p in rewarded:  # a voting proposer may be paid twice: its update and its vote
                    self.balance[p] = self.balance.get(p, 0) + share
                    rewards[p] = rewards.get(p, 0) + share
                self.pool -= share * len(rewarded)
        out.count("settlements recomputed")
        if sorted(slashes) != sorted(rec.slashes):
            out.problems.append(
                f"{r}: slashes should be {fmt_slashes(slashes, who)}, "
                f"the chain recorded {fmt_slashes(rec.slashes, who)}"
            )
        if rewards != rec.rewards:
            got = {who(a): v for a, v in rec.rewards.items()}
            out.problems.append(
                f"{r}: rewards should be { ({who(a): v for a, v in rewards.items()}) }, the chain paid {got}"
            )

    def compare(self, client: Any, who: Callable[[str], str], out: AuditReport) -> None:
        """The re-derived stakes and balances against the contract's storage at the end."""
        self.until(None, "end", who, out)
        for p in client.all_participants():
            out.count("stakes checked")
            want = (self.stake.get(p.address, 0), self.balance.get(p.address, 0))
            if (p.stake, p.balance) != want:
                out.problems.append(
                    f"{who(p.address)}: stake/balance on chain {p.stake}/{p.balance} wei, the rules give "
                    f"{want[0]}/{want[1]} wei"
                )
        if client.reward_pool() != self.pool:
            out.problems.append(
                f"reward pool on chain {client.reward_pool()} wei, the rules give {self.pool} wei"
            )


def fmt_slashes(slashes: Sequence[tuple[str, int, Any]], who: Callable[[str], str]) -> str:
    return "[" + ", ".join(f"{who(a)} {v} wei ({getattr(r, 'name', r)})" for a, v, r in sorted(slashes)) + "]"
