"""Every round of a deployment (replayed or live) checked against the store and the run config: the
role draw, the commitments, the candidate recomputed with `consortium.round` (the code every node and
the chain simulator run), the tally, the settlement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from consortium.audit.report import AuditReport
from consortium.audit.settlement import Ledger, Tally, fmt_votes
from consortium.config import RunConfig, config_digest, digest_matches
from consortium.round.availability import jointly_missing, reported_missing
from consortium.round.chain_view import fold_round, played, read_commitments, regrow, round_candidate
from consortium.round.history import PublicHistory
from consortium.round.pipeline import rule_from_config
from consortium.round.records import Layout, ProtocolError
from consortium.store import BlobNotFound, BlobStore, IntegrityError


def layout_of(store: BlobStore, digest: str) -> Layout:
    """The adapter layout (tensor names sorted, shapes) read off the genesis blob itself."""
    state = store.get_tensors(digest)
    return [(k, tuple(state[k].shape)) for k in sorted(state)]


def audit_chain(
    client: Any,
    store: BlobStore,
    cfg: RunConfig,
    out: AuditReport,
    names: dict[str, str] | None = None,
    genesis: str | None = None,
) -> None:
    """Every round of the deployment behind `client` (replayed or live) against the store and config;
    `genesis`: the run config's initial adapter (`node.build.genesis_digest`), checked against the one
    the contract was deployed with."""
    from consortium.chain import draw_roles  # web3: see audit_run

    names = names or {}

    def who(addr: str) -> str:
        return names.get(addr.lower(), addr)

    hist = client.history()
    params = client.params()
    if genesis is not None:
        out.count("genesis checked")
        if hist.genesis.hex() != genesis:
            out.problems.append(
                f"genesis: the contract was deployed with {hist.genesis.hex()}, the run config's initial "
                f"adapter is {genesis}"
            )
    if not hist.rounds:
        out.problems.append("chain: no round was ever opened")
        return
    try:
        layout = layout_of(store, hist.genesis.hex())
    except (BlobNotFound, IntegrityError) as e:
        out.problems.append(f"genesis adapter: {e}")
        return
    rule = rule_from_config(cfg)
    public = PublicHistory(store, layout, rule)  # as every participant grew it
    skipped: frozenset[int] = frozenset()
    digest = config_digest(cfg)
    ledger = Ledger.from_history(hist)
    _check_removals(hist, who, out)
    for rec in hist.rounds:
        r = f"round {rec.round_id}"
        skip = hist.superseded(rec.round_id)
        if skip != skipped:  # a removal undid rounds: the memory as if they had never been played
            public, skipped = PublicHistory(store, layout, rule), skip
            try:
                regrow(public, hist.rounds[: rec.round_id - 1], skip, cfg.chain.slash_excluded)
            except (BlobNotFound, IntegrityError, ProtocolError) as e:
                out.problems.append(f"{r}: the rounds before it cannot be read again after a removal: {e}")
        if not played(rec):
            continue
        seed = derived_seed(client, rec)
        out.count("round seeds re-derived")
        if seed != rec.seed:
            out.problems.append(
                f"{r}: the chain's round seed is {rec.seed.hex()}; the revealed seeds and the seed block's "
                f"hash give {seed.hex()}"
            )
        props, voters = draw_roles(
            seed, rec.owners, rec.weights, params.n_proposers, params.n_voters, params.proposers_vote
        )
        out.count("role draws")
        if (props, voters) != (rec.proposers, rec.voters):
            out.problems.append(
                f"{r}: roles on chain {rec.proposers}/{rec.voters}, the draw gives {props}/{voters}"
            )
        # what the round's voters jointly reported missing was unavailable then, even if it is back now;
        # a blob the audit cannot read that they did not report was there then: the store lost it since
        reported = reported_missing(rec)
        committed = read_commitments(rec, store, layout, reported_missing=reported)
        lost_since = committed.unavailable - reported
        _report_commits(rec, committed, r, who, out, digest)
        rc = round_candidate(public, rec, committed, cfg.chain.slash_excluded, seed=seed)
        expected = None
        if rc.error is not None:
            out.problems.append(f"{r}: the candidate cannot be recomputed: {rc.error}")
        elif rc.candidate is not None and rc.hash is not None:
            expected = (rc.hash, _mask(rec, rc.flagged), _mask(rec, rc.excluded))
            out.count("candidates recomputed")
        posted = {(c.candidate_hash.hex(), c.flagged, c.excluded) for c in rec.candidates}
        # evidence the round used, or a problem naming each invalid commitment
        if committed.invalid and not lost_since and _flagged_by_round(rec, committed, expected, posted):
            out.count("invalid updates flagged as evidence", len(committed.invalid))
        else:
            out.problems += [f"{r}: {who(a)}: {why}" for a, why in committed.invalid.items()]
        _check_outcome(rec, expected, params, r, who, out)
        ledger.settle(rec, params, r, who, out)
        try:
            fold_round(public, rec, rc)
        except (BlobNotFound, IntegrityError, ProtocolError) as e:
            out.problems.append(f"{r}: the new global model cannot be read: {e}")
    ledger.compare(client, who, out)


def _check_removals(hist: Any, who: Callable[[str], str], out: AuditReport) -> None:
    """Each executed removal against the records (docs/contract.md, *Removal*): it rewound to the base its
    first undone round opened on, that round was still on the model's path (no earlier removal undid it),
    its approvers held more than two thirds of the others' weight as the events give the stakes then,
    and the target did not approve itself."""
    undone: set[int] = set()
    for rm in hist.removals:
        if rm.after_round is None:
            continue
        r = f"removal {rm.removal_id} ({who(rm.target)} from round {rm.from_round})"
        out.count("removals checked")
        if not 1 <= rm.from_round <= len(hist.rounds):
            out.problems.append(f"{r}: there is no round {rm.from_round} to rewind to")
            continue
        if rm.from_round in undone:
            out.problems.append(f"{r}: rewound to a round an earlier removal had undone")
        base = hist.round(rm.from_round).base_hash
        if rm.base_hash != base:
            out.problems.append(
                f"{r}: set the global hash {rm.base_hash.hex()}; round {rm.from_round} opened on {base.hex()}"
            )
        if (rm.approve_weight, rm.others_weight) != (rm.replayed_approve, rm.replayed_others):
            out.problems.append(
                f"{r}: counted approvals {rm.approve_weight} of {rm.others_weight} wei; the stakes give "
                f"{rm.replayed_approve} of {rm.replayed_others}"
            )
        if not rm.supported(rm.replayed_approve, rm.replayed_others) or rm.target in rm.approvers:
            out.problems.append(f"{r}: executed without the approval of two thirds of the others' stake")
        undone.update(range(rm.from_round, rm.after_round + 1))


def derived_seed(client: Any, rec: Any) -> bytes:
    """The round seed as the contract's `draw` must have computed it, from public records only: the
    hash of the seed block (of the block before the draw when nobody drew within 256 blocks of it),
    the XOR of the revealed participant seeds, and the round id. Not the seed the draw's event names."""
    from consortium.chain.draw import round_seed, xor_seeds  # web3: see audit_run

    late = rec.draw_block is not None and rec.draw_block - rec.seed_block > 256
    block = rec.draw_block - 1 if late else rec.seed_block
    block_hash = bytes(client.w3.eth.get_block(block)["hash"])
    return round_seed(block_hash, xor_seeds(list(rec.seed_reveals.values())), rec.round_id)


def _flagged_by_round(rec: Any, committed: Any, expected: Any, posted: set[Any]) -> bool:
    """Whether the round itself acted on its invalid commitments: the pipeline's candidate (which flags
    or excludes them) was posted, or, with no candidate possible, a voter majority flagged every one of
    them (a blob not served: the voters jointly reported it missing, `round.availability`)."""
    if expected is not None:
        return expected in posted
    invalid = list(committed.invalid)
    if not all(a in rec.proposers for a in invalid):
        return False
    votes = list(rec.votes.values())
    revealed = sum(v.weight for v in votes)

    def acted_on(a: str) -> bool:
        i = rec.proposers.index(a)
        if a in committed.unavailable:
            return jointly_missing(votes, i)
        return 2 * sum(v.weight for v in votes if (v.flags >> i) & 1) > revealed

    return revealed > 0 and bool(invalid) and all(acted_on(a) for a in invalid)


def _mask(rec: Any, addresses: Sequence[str]) -> int:
    """The contract's bitmask of proposer slots for these proposer addresses."""
    return sum(1 << rec.proposers.index(a) for a in addresses)


def _report_commits(
    rec: Any, committed: Any, r: str, who: Callable[[str], str], out: AuditReport, digest: str
) -> None:
    """A commit URI naming another config than the run's is a problem; an invalid commitment (malformed
    URI, missing or unreadable blob) is one only if the round did not flag it (see `audit_chain`)."""
    out.count("commitments checked", len(rec.commits))
    for addr in rec.commits:
        config = committed.configs.get(addr)
        if config is not None and not digest_matches(config, digest):
            out.problems.append(
                f"{r}: {who(addr)} committed under config {config}; the config given hashes to {digest} "
                "(changed after the run?)"
            )


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
    tally = Tally.of(rec, params.quorum_bps)
    outcome, winner = Outcome.REJECTED, 0
    if not tally.quorum:
        outcome = Outcome.NO_QUORUM
    elif tally.winner:
        outcome, winner = Outcome.ACCEPTED, tally.winner
    out.count("tallies recomputed")
    if (outcome, winner) != (rec.outcome, rec.winner):
        out.problems.append(
            f"{r}: votes {fmt_votes(rec, who)} give {outcome.name} (candidate {winner}), the chain recorded "
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
