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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consortium.audit.adapter import check_exported_adapter
from consortium.audit.report import AuditInputError, AuditReport
from consortium.audit.rounds import audit_chain
from consortium.config import ConfigError, RunConfig
from consortium.rundir import HEAD, TXLOG, load_run_config
from consortium.store import BlobStore, open_store

__all__ = ["AuditInputError", "AuditReport", "audit_chain", "audit_live", "audit_run"]


def _config(path: Path) -> RunConfig:
    try:
        return load_run_config(path)
    except ConfigError as e:
        raise AuditInputError(str(e)) from None


def audit_run(run_dir: Path, genesis_of: Callable[[RunConfig], str] | None = None) -> AuditReport:
    """Audit a run directory: replay its transaction log and check everything against the store.
    `genesis_of(cfg)`: the run's initial adapter (the CLI passes `node.build.genesis_digest`, which
    builds the model), checked against the deployed genesis; None skips that check."""
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
    genesis = genesis_of(cfg) if genesis_of is not None else None
    audit_chain(rep.client, BlobStore(run_dir / "store"), cfg, out, names, genesis)
    final = rep.client.global_hash().hex()
    _check_adapter(run_dir, final, report, out)
    if "removal" in report:  # `consortium remove --method exact` on a chain run (removal.on_chain)
        _check_removal_record(report, rep.client.history(), out)
    return out


def _check_removal_record(report: dict[str, Any], hist: Any, out: AuditReport) -> None:
    """What report.json says the removal did is what the chain's events show: the removal it names was
    executed, against the first participant it names, from the round it names; every other participant
    it names left (its exit announced) before the removal was executed."""
    rec = report["removal"]
    accounts = report.get("chain", {}).get("accounts", {})
    out.count("removal records checked")
    try:
        rm = hist.removals[int(rec["removal_id"]) - 1]
        target, *leaving = (str(accounts[n]).lower() for n in rec["participants"])
        claimed = (target, int(rec["chain_from_round"]))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        out.problems.append(
            f"report.json removal: names no executed removal of this chain's participants ({e!r})"
        )
        return
    if rm.after_round is None or (rm.target.lower(), rm.from_round) != claimed:
        out.problems.append(
            f"report.json removal: says removal {rec['removal_id']} took {rec['participants'][0]} out "
            f"from round {claimed[1]}; the chain's removal {rm.removal_id} names {rm.target} from round "
            f"{rm.from_round}" + ("" if rm.after_round is not None else ", not executed")
        )
    left = {a.lower() for a, p in hist.participants.items() if p.exiting or not p.registered}
    gone = [a for a in leaving if a not in left]
    if gone:
        out.problems.append(
            f"report.json removal: {', '.join(gone)} named as removed but never announced an exit"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AuditInputError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise AuditInputError(f"{path}: expected a JSON object")
    return data


def _check_adapter(run_dir: Path, final: str, report: dict[str, Any], out: AuditReport) -> None:
    """The chain's global hash is the run's final adapter: the report names it and the export holds it."""
    if report.get("global_adapter") not in (None, final):
        out.problems.append(
            f"final adapter: the chain's global hash is {final}, the report names {report['global_adapter']}"
        )
    check_exported_adapter(run_dir, BlobStore(run_dir / "store"), final, out)


def audit_live(
    rpc_url: str,
    contract: str,
    store: str | Path,
    config: Path,
    genesis_of: Callable[[RunConfig], str] | None = None,
) -> AuditReport:
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
    audit_chain(client, open_store(store), cfg, out, genesis=genesis_of(cfg) if genesis_of else None)
    return out
