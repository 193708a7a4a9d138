"""`consortium remove --method exact` on a chain run: the contract's removal, on the run's own chain.

A network removes a participant through the contract (docs/removal.md, *On a network*); a simulated chain
run does the same on its recorded chain. The run's transaction log is replayed on a fresh embedded EVM
(`consortium.chain.replay`: the same chain, block for block), and from its head:

1. any further participant to remove announces its exit (one removal rewinds the model; the rounds it
   undoes take every removed participant's updates with them, and an exiting participant is never
   drawn again);
2. the first participant still in proposes the removal of the first one named from the round named,
   every participant left approves, and the removal is executed: the global hash goes back to the base
   that round opened on and the removed participant is out for good;
3. the run plays as many rounds as the removal undid, through the simulation's own chain round
   (`chain_sim.ChainRoundRunner`), whose pipeline memory is grown as if the undone rounds had never been
   played (`round.chain_view.regrow`, what every node and the audit do).

The new directory is a chain run directory like any other: its transaction log holds the original
transactions, the removal and the new rounds, its report the original rounds and the new ones, and
`report.json`'s `removal` says who, from which round, the removal's id on chain and what it cost. So
`consortium audit` replays it all, checks the removal against the events (the base, the approvals, the
threshold) and recomputes every candidate of the new rounds. As on a network, the new rounds draw
new roles and seeds: a retraining without the participant, not a bit-for-bit twin of a run without it.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

from consortium.chain import ChainError, TxLog, head, replay
from consortium.chain_sim import runner_for
from consortium.removal.source import RemovalInputError, SourceRun, read_json
from consortium.round.chain_view import regrow
from consortium.round.pipeline import rule_from_config
from consortium.round.records import ProtocolError, get_vector
from consortium.rundir import HEAD, TXLOG, RunDir
from consortium.store import BlobNotFound, BlobStore, IntegrityError


def check_chain_source(src: SourceRun) -> None:
    """A chain run a removal can go on from: its chain replayable here and nothing that would not carry
    over (a differentially private run's accountant, a run that is already a removal)."""
    chain = src.report.get("chain") or {}
    if chain.get("backend", "embedded") != "embedded":
        raise RemovalInputError(
            f"{src.path}: the run's chain is a JSON-RPC node, not replayable here; remove the participant "
            "on that network with `consortium removal propose` (docs/removal.md)"
        )
    if not isinstance(chain.get("accounts"), dict) or not (src.path / TXLOG).is_file():
        raise RemovalInputError(f"{src.path}: no chain record (report.json's chain.accounts, {TXLOG})")
    if src.cfg.privacy.mode != "off":
        raise RemovalInputError(
            f"{src.path}: privacy.mode {src.cfg.privacy.mode!r}: a chain removal of a DP run is not built "
            "(the replayed rounds would need the original accountant's state)"
        )
    if "removal" in src.report:
        raise RemovalInputError(f"{src.path}: is itself a removal; remove from the original run directory")


def remove_on_chain(sim: Any, src: SourceRun, tmp: Path) -> dict[str, Any]:
    """Carry out the removal of `src.removed` on the chain of the run `src` into the new run directory
    `tmp` (config.toml already there); returns the removal record (also in its report.json)."""
    t0 = time.perf_counter()
    cfg, path = src.cfg, src.path
    rd = RunDir(tmp)
    rd.plots.mkdir(exist_ok=True)
    shutil.copytree(path / "store", rd.store)  # the audit recomputes every round, the undone ones too
    (tmp / "chain").mkdir()
    shutil.copyfile(path / TXLOG, tmp / TXLOG)
    if (path / "run.log").is_file():  # the original rounds' times, for the dashboard; the new ones follow
        shutil.copyfile(path / "run.log", rd.log_path)
    try:
        replayed = replay(
            path / TXLOG, n_accounts=cfg.participants + 1, seed=cfg.seed, txlog=TxLog(tmp / TXLOG)
        )
    except ValueError as e:  # a malformed log line
        raise RemovalInputError(f"{path / TXLOG}: {e}") from None
    if not replayed.ok or replayed.client is None:
        raise RemovalInputError(f"{path / TXLOG}: the chain does not replay: {replayed.problems[0]}")
    operator = replayed.client
    recorded, found = read_json(path / HEAD), head(operator.w3)
    if (found["block"], found["hash"]) != (recorded.get("block"), recorded.get("hash")):
        raise RemovalInputError(
            f"{path / TXLOG}: the chain does not replay to the run's head ({HEAD}: block "
            f"{recorded.get('block')}; the log ends at block {found['block']}): truncated or edited"
        )
    if operator.global_hash().hex() != src.report.get("global_adapter"):
        raise RemovalInputError(f"{path}: the chain's global model is not the one report.json names")
    accounts: dict[str, str] = dict(src.report["chain"]["accounts"])
    rows = src.report["rounds_detail"]
    from_round = int(rows[src.from_round].get("round_id", src.from_round + 1))
    target, *leaving = src.removed
    stayers = [n for n in accounts if n not in src.removed]
    try:
        for name in leaving:
            operator.as_account(accounts[name]).announce_exit()
        proposer = operator.as_account(accounts[stayers[0]])
        proposer.propose_removal(accounts[target], from_round)
        removal_id = len(operator.history().removals)
        for name in stayers[1:]:
            operator.as_account(accounts[name]).approve_removal(removal_id)
        proposer.execute_removal()
    except ChainError as e:
        raise RemovalInputError(f"{path}: the contract refused the removal: {e}") from None
    hist = operator.history()

    strategies = {p.name: p.strategy for p in sim.participants}
    attackers = frozenset(p.name for p in sim.participants if p.adversary is not None)
    store = BlobStore(rd.store)
    rule = rule_from_config(cfg)
    runner = runner_for(
        cfg, operator, accounts, store, sim.layout, rule, strategies, attackers,
        gone=frozenset(src.removed), genesis=hist.genesis.hex(),
    )  # fmt: skip
    try:
        regrow(runner.public, hist.rounds, hist.superseded(len(hist.rounds) + 1), cfg.chain.slash_excluded)
    except (BlobNotFound, IntegrityError, ProtocolError) as e:
        raise RemovalInputError(f"{path / 'store'}: the kept rounds cannot be read again: {e}") from None

    report = copy.deepcopy(src.report)
    report |= {"status": "running", "timings": {}, "losses": {"federated": {}}}
    undone = len(src.replaced)
    report["rounds"] = len(rows) + undone
    global_hash = operator.global_hash().hex()
    moved = [r for r in src.kept if r.global_out != r.global_in]  # the last step before the rewound round
    previous = get_vector(store, moved[-1].global_in, sim.layout) if moved else None
    rd.write_json("report.json", report)
    rd.log(f"removal {removal_id} executed on chain: {target} from round {from_round}; replaying {undone}")
    play = sim.chain_play(runner, rd, report)
    with sim.progress() as progress:
        for k in range(undone):
            global_hash, previous = sim.play_round(
                rd, report, progress, len(rows) + k, global_hash, previous, play
            )
    trained = sum(len(d.get("commitments") or []) for d in report["rounds_detail"][len(rows) :])
    full = sum(len(d.get("commitments") or []) for d in rows)  # the original run's: every round again
    record = {
        "participants": list(src.removed),
        "from_round": src.from_round,
        "chain_from_round": from_round,
        "removal_id": removal_id,
        "method": "exact",
        "protocol": "chain",
        "global_adapter": global_hash,
        "source": {"run_dir": str(path.resolve()), "global_adapter": src.report.get("global_adapter")},
        "replayed_rounds": undone,
        "cost": {
            "local_steps": trained * cfg.train.local_steps,
            "full_retrain_local_steps": full * cfg.train.local_steps,
            "fraction_of_full_retrain": trained / full,
            "seconds": time.perf_counter() - t0,
        },
    }
    report |= {"removal": record, "status": "complete", "chain": runner.summary(cfg, rd)}
    rd.write_json("report.json", report)
    return record
