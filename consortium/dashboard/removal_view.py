"""Contribution removals on the page (docs/removal.md): what a removal did, from its public records.

Two sources, one shape (`removals` in the page's document, one entry per removal):
- a directory written by `consortium remove`: its `removal.json` (who, from which round, the method,
  the kept and replayed rounds, the cost) becomes the page's run, each replayed round marked with its
  kind (exact, reused, estimated) next to the global model the original run had after that round;
- a live network: the contract's removal proposals (`History.removals`), with their approvals, the
  weight they held against the two-thirds threshold and the rounds an executed one undid, which the
  round table then marks as undone.
Nothing is recomputed here; `consortium audit` is what checks a removal.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ETH = 10**18
SCHEDULE_KEYS = ("exact_rounds", "correct_every", "warmup_rounds", "estimate")  # recover's, as recorded


def round_entry(number: int, **fields: Any) -> dict[str, Any]:
    """A round of the page's table with every field the page reads; those a source lacks are empty."""
    entry: dict[str, Any] = {
        "round": number, "round_id": None, "outcome": None, "proposers": [], "voters": [], "votes": {},
        "judgements": {}, "flagged": [], "excluded": [], "unavailable": [], "slashes": [], "rewards": {},
        "stakes": {}, "weights": {}, "gas": {}, "gas_total": None, "bytes_up": None, "bytes_down": None,
        "accuracy": {}, "mean_accuracy": None, "backdoor": [], "harmful": [], "epsilon": None,
        "global_in": None, "global_out": None, "candidate": None, "candidates": [], "commitments": [],
        "phases": {}, "finished_at": None, "seconds": None,
        "undone_by": None,  # a live network: the removal that undid this round
        "original_global_out": None,  # a removal directory: the original run's global after this round
    }  # fmt: skip
    unknown = set(fields) - set(entry)
    if unknown:
        raise KeyError(f"not a round field: {', '.join(sorted(unknown))}")
    return entry | fields


# --- a `consortium remove` directory -------------------------------------------------------------


def record_problem(record: dict[str, Any]) -> str | None:
    """Why a removal record cannot be shown (None: it can); only the fields the page reads."""
    rem = record.get("removal")
    if not isinstance(rem, dict):
        return "no 'removal' object (not written by `consortium remove`)"
    if not isinstance(rem.get("participants"), list) or not isinstance(rem.get("from_round"), int):
        return "'removal' lacks its participants or its from_round"
    for key in ("rounds", "kept_rounds", "original_rounds"):
        rows = record.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return f"'{key}' is not a list of round records"
        if not all(isinstance(r.get("round"), int) for r in rows):
            return f"'{key}' holds a round record without an integer 'round'"
    return None


def removal_run(root: Path, record: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The page's `run`, `rounds` and `removals` for a removal directory (record checked by
    `record_problem`): the kept rounds as they were, then each replayed round with its kind."""
    rem, source, cost = record["removal"], record.get("source") or {}, record.get("cost") or {}
    original = {int(r["round"]): r.get("global_out") for r in record.get("original_rounds", [])}
    rounds = [_removal_round(r, "kept", None) for r in record.get("kept_rounds", [])]
    rounds += [
        _removal_round(r, str(r.get("kind") or rem.get("method")), original.get(int(r["round"])))
        for r in record["rounds"]
    ]
    cfg = _config(root / "config.toml", problems)
    names = sorted({c["participant"] for r in rounds for c in r["commitments"]} | set(rem["participants"]))
    removed = set(rem["participants"])
    run = {
        "name": root.name, "status": "complete", "model": (cfg.get("model") or {}).get("name"),
        "lora_variant": (cfg.get("lora") or {}).get("variant"),
        "protocol": f"removal by {rem.get('method')} (consortium remove)",
        "aggregator": cfg.get("aggregator"), "server_lr": cfg.get("server_lr"),
        "rounds": len(rounds), "rounds_completed": len(rounds), "participants": len(names) - len(removed),
        "global_adapter": rem.get("global_adapter"), "error": None, "accuracy": {}, "bytes": {},
        "timings": {}, "privacy": None, "chain": None, "head": None, "defense": None, "attacks": [],
        "participants_detail": [
            {"name": n, "strategy": "removed" if n in removed else "kept", "colour": None, "domains": [],
             "examples": None, "account": None}
            for n in names
        ],
    }  # fmt: skip
    removal = {
        "id": None,
        "participants": list(rem["participants"]),
        "from_round": int(rem["from_round"]) + 1,  # the page numbers rounds from 1
        "method": rem.get("method"),
        "status": "computed",
        "schedule": {k: rem[k] for k in SCHEDULE_KEYS if k in rem},
        "global_adapter": rem.get("global_adapter"),
        "source_run_dir": source.get("run_dir"),
        "source_global_adapter": source.get("global_adapter"),
        "local_steps": cost.get("local_steps"),
        "fraction_of_full_retrain": cost.get("fraction_of_full_retrain"),
        "seconds": cost.get("seconds"),
        "rounds_undone": [r["round"] for r in rounds if r["outcome"] != "kept"],
    }
    return {"run": run, "rounds": rounds, "removals": [removal]}


def _removal_round(r: dict[str, Any], kind: str, original_out: str | None) -> dict[str, Any]:
    commitments = [c for c in r.get("commitments") or [] if isinstance(c, dict) and "participant" in c]
    return round_entry(
        int(r["round"]) + 1,
        outcome=kind,
        proposers=[c["participant"] for c in commitments],
        flagged=list(r.get("flagged") or []),
        weights=dict(r.get("weights") or {}),
        global_in=r.get("global_in"),
        global_out=r.get("global_out"),
        original_global_out=original_out,
        commitments=commitments,
    )


def _config(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path.name}: missing (the removal directory should hold the run's config)")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        problems.append(f"{path.name}: unreadable ({type(e).__name__}: {e})")
    return {}


# --- a live network --------------------------------------------------------------------------------


def network_removals(history: Any, names: dict[str, str]) -> list[dict[str, Any]]:
    """Every removal proposal of a deployment (`consortium.chain.history.History`), newest state:
    executed (with the weights the contract summed), pending (with the weight its approvers hold now)
    or lapsed (its deadline passed unexecuted)."""
    weights = {a: p.weight(history.min_stake) for a, p in history.participants.items()}
    opened = len(history.rounds)
    out = []
    for rm in history.removals:
        if rm.after_round is not None:
            status, approve, others = "executed", rm.approve_weight, rm.others_weight
            undone = list(range(rm.from_round, rm.after_round + 1))
        else:
            status = "lapsed" if opened > rm.deadline else "pending"
            approve, others = rm.support(weights)
            undone = []
        out.append(
            {
                "id": rm.removal_id,
                "participants": [names.get(rm.target, rm.target)],
                "from_round": rm.from_round,
                "method": "network replay (contract)",
                "status": status,
                "proposer": names.get(rm.proposer, rm.proposer),
                "approvers": [names.get(a, a) for a in rm.approvers],
                "approve_eth": approve / ETH,
                "others_eth": others / ETH,
                "supported": rm.supported(approve, others),
                "deadline_round": rm.deadline,
                "after_round": rm.after_round,
                "global_adapter": rm.base_hash.hex() if rm.base_hash else None,
                "rounds_undone": undone,
            }
        )
    return out


def chain_run_removal(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The removal a chain run directory written by `consortium remove --method exact` carried out on
    its chain (`report.json`'s `removal`; `removal.on_chain`), as a network removal entry."""
    rec = report.get("removal")
    if not isinstance(rec, dict):
        return []
    first, replayed = int(rec["chain_from_round"]), int(rec["replayed_rounds"])
    after = first + replayed - 1  # the last round it undid: the original run's last
    cost = rec.get("cost") or {}
    return [
        {
            "id": rec.get("removal_id"),
            "participants": list(rec["participants"]),
            "from_round": first,
            "method": "exact (the contract's removal, on the run's chain)",
            "status": "executed",
            "after_round": after,
            "global_adapter": rec.get("global_adapter"),
            "source_global_adapter": (rec.get("source") or {}).get("global_adapter"),
            "local_steps": cost.get("local_steps"),
            "fraction_of_full_retrain": cost.get("fraction_of_full_retrain"),
            "seconds": cost.get("seconds"),
            "rounds_undone": list(range(first, after + 1)),
        }
    ]


def mark_undone(rounds: list[dict[str, Any]], removals: list[dict[str, Any]]) -> None:
    """Set `undone_by` on each round an executed removal undid (the first removal that undid it)."""
    by_round: dict[int, int] = {}
    for rm in removals:
        for n in rm["rounds_undone"]:
            by_round.setdefault(n, rm["id"])
    for r in rounds:
        r["undone_by"] = by_round.get(r.get("round_id") or r["round"])
