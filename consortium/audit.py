"""`consortium audit`: recompute a run from its public records, bit for bit, and say what does not match.

Public records are the chain (a run directory keeps it as `chain/txlog.jsonl`, which is replayed on a
fresh seeded embedded EVM; a live network is read over JSON-RPC), the blob store and the run config.
Checked, round by round: the role draw; every committed blob against its commitment; the candidate
aggregate recomputed from its inputs against the accepted one (hash and flags); the vote tally and
outcome; every reward and slash, and so every stake; finally the global hash against the exported
adapter. Each mismatch is one line naming the round, the participant, what was expected and found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from consortium.config import ConfigError, RunConfig, config_digest
from consortium.round.chain_view import fold_round, played, read_commitments, round_candidate
from consortium.round.history import PublicHistory
from consortium.round.pipeline import rule_from_config
from consortium.round.records import Layout, ProtocolError
from consortium.rundir import HEAD, TXLOG, load_run_config
from consortium.store import BlobNotFound, BlobStore, IntegrityError, open_store

BPS = 10_000


class AuditInputError(ValueError):
    """The audit cannot start: a missing or malformed run directory, config or chain record."""


@dataclass
class AuditReport:
    """What was checked (counts) and every mismatch found (empty: the run verifies)."""

    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


def _config(path: Path) -> RunConfig:
    try:
        return load_run_config(path)
    except ConfigError as e:
        raise AuditInputError(str(e)) from None


def layout_of(store: BlobStore, digest: str) -> Layout:
    """The adapter layout (tensor names sorted, shapes) read off the genesis blob itself."""
    state = store.get_tensors(digest)
    return [(k, tuple(state[k].shape)) for k in sorted(state)]


def audit_run(run_dir: Path) -> AuditReport:
    """Audit a run directory: replay its transaction log and check everything against the store."""
    from consortium.chain import replay  # web3 and the EVM: only a chain audit needs them

    if not run_dir.is_dir():
        raise AuditInputError(f"{run_dir}: not a run directory")
    cfg = _config(run_dir / "config.toml")
    if cfg.protocol != "chain":
        raise AuditInputError(
            f"{run_dir}: protocol {cfg.protocol!r} has no chain to audit; only 'chain' runs"
        )
    for name in (TXLOG, HEAD, "report.json"):
        if not (run_dir / name).is_file():
            raise AuditInputError(f"{run_dir / name}: missing")
    report = _read_json(run_dir / "report.json")
    chain = report.get("chain", {})
    if chain.get("backend", "embedded") != "embedded":
        raise AuditInputError(
            f"{run_dir}: the run's chain is the JSON-RPC node at {cfg.chain.rpc_url}, not replayable here; "
            f"audit it live: --rpc-url URL --contract {chain.get('contract')} --store {run_dir / 'store'} "
            f"--config {run_dir / 'config.toml'}"
        )
    out = AuditReport()
    try:
        rep = replay(run_dir / TXLOG, n_accounts=cfg.participants + 1, seed=cfg.seed)
    except ValueError as e:
        raise AuditInputError(str(e)) from None
    out.problems += rep.problems
    out.count("transactions replayed", rep.entries)
    if rep.client is None:
        out.problems.append(f"{TXLOG}: no contract deployment in the transaction log")
        return out
    recorded = _read_json(run_dir / HEAD)
    from consortium.chain import head  # web3: see above

    found = head(rep.client.w3)
    if (found["block"], found["hash"]) != (recorded.get("block"), recorded.get("hash")):
        out.problems.append(
            f"chain head: the run ended at block {recorded.get('block')} {recorded.get('hash')}, the "
            f"transaction log replays to block {found['block']} {found['hash']} (log truncated or edited)"
        )
    names = {a.lower(): n for n, a in report.get("chain", {}).get("accounts", {}).items()}
    audit_chain(rep.client, BlobStore(run_dir / "store"), cfg, out, names)
    final = rep.client.global_hash().hex()
    _check_adapter(run_dir, final, report, out)
    return out


def _mask(rec: Any, addresses: Sequence[str]) -> int:
    """The contract's bitmask of proposer slots for these proposer addresses."""
    return sum(1 << rec.proposers.index(a) for a in addresses)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AuditInputError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise AuditInputError(f"{path}: expected a JSON object")
    return data


def audit_chain(
    client: Any, store: BlobStore, cfg: RunConfig, out: AuditReport, names: dict[str, str] | None = None
) -> None:
    """Every round of the deployment behind `client` (replayed or live) against the store and config."""
    from consortium.chain import draw_roles  # web3: see audit_run

    names = names or {}

    def who(addr: str) -> str:
        return names.get(addr.lower(), addr)

    hist = client.history()
    params = client.params()
    if not hist.rounds:
        out.problems.append("chain: no round was ever opened")
        return
    genesis = hist.rounds[0].base_hash.hex()
    try:
        layout = layout_of(store, genesis)
    except (BlobNotFound, IntegrityError) as e:
        out.problems.append(f"genesis adapter: {e}")
        return
    public = PublicHistory(store, layout, rule_from_config(cfg))  # as every participant grew it
    digest = config_digest(cfg)
    ledger = _Ledger.from_history(hist)
    for rec in hist.rounds:
        r = f"round {rec.round_id}"
        if not played(rec):
            continue
        props, voters = draw_roles(rec.seed, rec.owners, rec.weights, params.n_proposers, params.n_voters)
        out.count("role draws")
        if (props, voters) != (rec.proposers, rec.voters):
            out.problems.append(
                f"{r}: roles on chain {rec.proposers}/{rec.voters}, the draw gives {props}/{voters}"
            )
        committed = read_commitments(rec, store, layout)
        _report_commits(rec, committed, r, who, out, digest)
        rc = round_candidate(public, rec, committed, cfg.chain.slash_excluded)
        expected = None
        if rc.error is not None and committed.complete:
            out.problems.append(f"{r}: the candidate cannot be recomputed: {rc.error}")
        elif rc.candidate is not None and rc.hash is not None:
            expected = (rc.hash, _mask(rec, rc.flagged), _mask(rec, rc.excluded))
            out.count("candidates recomputed")
        posted = {(c.candidate_hash.hex(), c.flagged, c.excluded) for c in rec.candidates}
        if committed.unavailable and expected in posted:  # no-shows the round itself flagged: the rule
            out.count("unavailable updates flagged as no-shows", len(committed.unavailable))
        else:
            out.problems += [f"{r}: {who(a)}: {why}" for a, why in committed.unavailable.items()]
        _check_outcome(rec, expected, params, r, who, out)
        ledger.settle(rec, params, r, who, out)
        try:
            fold_round(public, rec, rc)
        except (BlobNotFound, IntegrityError, ProtocolError) as e:
            out.problems.append(f"{r}: the new global model cannot be read: {e}")
    ledger.compare(client, who, out)


def _report_commits(
    rec: Any, committed: Any, r: str, who: Callable[[str], str], out: AuditReport, digest: str
) -> None:
    """A malformed commit URI, or one naming another config than the run's, is a problem; a missing
    or unreadable blob is one only if the round's candidate did not flag it (see `audit_chain`)."""
    out.count("commitments checked", len(rec.commits))
    for addr in rec.commits:
        config = committed.configs.get(addr)
        if config is not None and config != digest:
            out.problems.append(
                f"{r}: {who(addr)} committed under config {config}; the config given hashes to {digest} "
                "(changed after the run?)"
            )
        if addr in committed.malformed:
            out.problems.append(f"{r}: {who(addr)}: {committed.malformed[addr]}")


def _check_outcome(
    rec: Any,
    expected: tuple[str, int] | None,
    params: Any,
    r: str,
    who: Callable[[str], str],
    out: AuditReport,
) -> None:
    """Tally the revealed votes as the contract must, and check the accepted candidate is the pipeline's."""
    from consortium.chain import Outcome  # web3: see audit_run

    if rec.outcome is None:
        out.problems.append(f"{r}: opened but never finalized (the chain stops before its end)")
        return
    weight = dict(zip(rec.owners, rec.weights, strict=True))
    for v, vote in rec.votes.items():
        if vote.weight != weight.get(v, 0):
            out.problems.append(
                f"{r}: {who(v)}'s vote weighs {vote.weight}, its stake at the draw is {weight.get(v, 0)}"
            )
    tally = _Tally.of(rec, params.quorum_bps)
    outcome, winner = Outcome.REJECTED, 0
    if not tally.quorum:
        outcome = Outcome.NO_QUORUM
    elif tally.majority:
        outcome, winner = Outcome.ACCEPTED, tally.majority
    out.count("tallies recomputed")
    if (outcome, winner) != (rec.outcome, rec.winner):
        out.problems.append(
            f"{r}: votes {_votes(rec, who)} give {outcome.name} (candidate {winner}), the chain recorded "
            f"{rec.outcome.name if rec.outcome is not None else 'no outcome'} (candidate {rec.winner})"
        )
    if rec.outcome == Outcome.ACCEPTED and 0 < rec.winner <= len(rec.candidates):
        won = rec.candidates[rec.winner - 1]
        found = (won.candidate_hash.hex(), won.flagged, won.excluded)
        if expected is None:
            out.problems.append(
                f"{r}: candidate #{rec.winner} was accepted but cannot be recomputed (see above)"
            )
        elif found != expected:
            out.problems.append(
                f"{r}: accepted candidate #{rec.winner} by {who(won.poster)} is {found[0]} "
                f"flags {found[1]:#b} excluded {found[2]:#b}; the pipeline under this config gives "
                f"{expected[0]} flags {expected[1]:#b} excluded {expected[2]:#b}"
            )


@dataclass(frozen=True)
class _Tally:
    """The revealed votes of a round as the contract's finalize counts them."""

    revealed: int  # weight of all revealed votes
    quorum: bool
    majority: int | None  # the choice holding a strict majority of `revealed` (quorum only)

    @classmethod
    def of(cls, rec: Any, quorum_bps: int) -> _Tally:
        weight = dict(zip(rec.owners, rec.weights, strict=True))
        revealed = sum(v.weight for v in rec.votes.values())
        quorum = revealed > 0 and revealed * BPS >= quorum_bps * sum(weight.get(v, 0) for v in rec.voters)
        tallies: dict[int, int] = {}
        for v in rec.votes.values():
            tallies[v.choice] = tallies.get(v.choice, 0) + v.weight
        majority = next((k for k, t in tallies.items() if t * 2 > revealed), None) if quorum else None
        return cls(revealed, quorum, majority)


def _votes(rec: Any, who: Callable[[str], str]) -> str:
    return "{" + ", ".join(f"{who(v)}: {b.choice}" for v, b in rec.votes.items()) + "}"


@dataclass
class _Ledger:
    """Stakes, balances and the reward pool re-derived from the contract's rules (not its events)."""

    stake: dict[str, int]
    balance: dict[str, int]
    pool: int

    @classmethod
    def from_history(cls, hist: Any) -> _Ledger:
        """Start from what was deposited: registrations, top-ups and funding are plain transfers."""
        stake: dict[str, int] = {}
        pool = 0
        for e in hist.events:
            if e.name in ("Registered", "ToppedUp"):
                stake[e.args["who"]] = e.args["stake"]
            elif e.name == "Funded":
                pool += e.args["amount"]
            elif e.name == "RoundOpened":
                break  # only deposits before the first round (runs register once)
        return cls(stake, dict.fromkeys(stake, 0), pool)

    def _slash(self, who: str, bps: int) -> int:
        amount = self.stake[who] * bps // BPS
        self.stake[who] -= amount
        return amount

    def settle(self, rec: Any, params: Any, r: str, who: Callable[[str], str], out: AuditReport) -> None:
        """The contract's finalize, recomputed: slashes in slot order, then equal reward shares."""
        from consortium.chain import Outcome, SlashReason  # web3: see audit_run

        if rec.outcome in (None, Outcome.CANCELLED):
            return
        tally = _Tally.of(rec, params.quorum_bps)
        revealed, quorum, majority = tally.revealed, tally.quorum, tally.majority
        won = rec.candidates[rec.winner - 1] if rec.winner > 0 else None
        winner_flags, winner_excluded = (won.flagged, won.excluded) if won else (0, 0)
        slashes: list[tuple[str, int, SlashReason]] = []
        rewarded: list[str] = []
        for i, p in enumerate(rec.proposers):
            flag_weight = sum(v.weight for v in rec.votes.values() if (v.flags >> i) & 1)
            if p not in rec.commits:
                slashes.append((p, self._slash(p, params.slash_no_show_bps), SlashReason.NO_SHOW))
            elif (winner_flags >> i) & 1 or (quorum and flag_weight * 2 > revealed):
                slashes.append((p, self._slash(p, params.slash_rejected_bps), SlashReason.REJECTED))
            elif rec.outcome == Outcome.ACCEPTED and not (winner_excluded >> i) & 1:
                rewarded.append(p)
        for v in rec.voters:
            if v not in rec.votes:
                slashes.append((v, self._slash(v, params.slash_no_show_bps), SlashReason.NO_SHOW))
            elif majority is not None:
                if rec.votes[v].choice == majority:
                    rewarded.append(v)
                else:
                    slashes.append((v, self._slash(v, params.slash_minority_bps), SlashReason.MINORITY))
        slashes = [s for s in slashes if s[1] > 0]
        self.pool += sum(s[1] for s in slashes)
        rewards: dict[str, int] = {}
        if rewarded:
            share = min(params.reward_per_round, self.pool) // len(rewarded)
            if share > 0:
                for p in rewarded:
                    self.balance[p] += share
                    rewards[p] = share
                self.pool -= share * len(rewarded)
        out.count("settlements recomputed")
        if sorted(slashes) != sorted(rec.slashes):
            out.problems.append(
                f"{r}: slashes should be {_fmt(slashes, who)}, the chain recorded {_fmt(rec.slashes, who)}"
            )
        if rewards != rec.rewards:
            got = {who(a): v for a, v in rec.rewards.items()}
            out.problems.append(
                f"{r}: rewards should be { ({who(a): v for a, v in rewards.items()}) }, the chain paid {got}"
            )

    def compare(self, client: Any, who: Callable[[str], str], out: AuditReport) -> None:
        """The re-derived stakes and balances against the contract's storage at the end."""
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


def _fmt(slashes: Sequence[tuple[str, int, Any]], who: Callable[[str], str]) -> str:
    return "[" + ", ".join(f"{who(a)} {v} wei ({getattr(r, 'name', r)})" for a, v, r in sorted(slashes)) + "]"


def _check_adapter(run_dir: Path, final: str, report: dict[str, Any], out: AuditReport) -> None:
    """The chain's global hash is the run's final adapter: the report names it and the export holds it."""
    if report.get("global_adapter") not in (None, final):
        out.problems.append(
            f"final adapter: the chain's global hash is {final}, the report names {report['global_adapter']}"
        )
    store = BlobStore(run_dir / "store")
    try:
        state = store.get_tensors(final)
    except (BlobNotFound, IntegrityError) as e:
        out.problems.append(f"final adapter: {e}")
        return
    exported = run_dir / "adapter" / "adapter_model.safetensors"
    if not exported.is_file():
        out.problems.append(f"final adapter: {exported} is missing")
        return
    saved = load_file(str(exported))
    for k, t in sorted(state.items()):
        if k not in saved or not torch.equal(saved[k], t):
            out.problems.append(
                f"final adapter: tensor {k} of {exported} differs from the global model {final}"
            )
            return
    out.count("adapter tensors checked", len(state))


def audit_live(rpc_url: str, contract: str, store: str | Path, config: Path) -> AuditReport:
    """Audit a live deployment over JSON-RPC against a blob store (a directory, an `http(s)://` blob
    server or any fsspec URL: `open_store`) and the run config."""
    from consortium.chain import ChainClient, RpcBackend  # web3: see audit_run

    cfg = _config(config)
    if "://" not in str(store) and not Path(store).is_dir():
        raise AuditInputError(f"{store}: store directory not found")
    try:
        client = ChainClient.at(RpcBackend(rpc_url), contract)
        client.params()
    except Exception as e:  # connection refused, no contract at that address...
        raise AuditInputError(f"--rpc-url {rpc_url} --contract {contract}: {type(e).__name__}: {e}") from None
    out = AuditReport()
    audit_chain(client, open_store(store), cfg, out)
    return out


__all__ = ["AuditInputError", "AuditReport", "audit_chain", "audit_live", "audit_run"]
