"""What the page shows, as one JSON document built from a run directory's records.

`build_state(root)` is the whole view: the run's header, one entry per finished round (roles, votes,
flags, slashes, rewards, gas, bytes, accuracy, ε, blob hashes, the chain phases with their blocks and
the wall-clock time from run.log), the round in progress if any, and chart series ready to plot.
Only what the run has written is shown; nothing is recomputed, so the numbers are the report's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .charts import charts, participant_colours, strategies_of
from .removal_view import chain_run_removal, mark_undone, removal_run, round_entry
from .rundir_view import (
    Sources,
    age_seconds,
    fingerprint,
    group_rounds,
    read_sources,
    round_finish_times,
)


def build_state(root: Path) -> dict[str, Any]:
    """The page's document for the run directory `root` (read-only; every problem listed, none raised)."""
    version = fingerprint(root)
    src = read_sources(root)
    state: dict[str, Any] = {
        "version": version,
        "run_dir": str(root),
        "problems": src.problems,
        "seconds_since_change": age_seconds(src),
        "run": None,
        "rounds": [],
        "in_progress": None,
        "charts": [],
        "audit": src.audit,
        "removals": [],
    }
    if src.removal is not None:
        try:
            state |= removal_run(root, src.removal, src.problems)
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # a field of another type
            src.problems.append(f"removal.json: malformed ({type(e).__name__}: {e})")
        return state
    r = src.report
    if r is None:
        return state
    strategies = strategies_of(r)
    colours = participant_colours(strategies, set(r.get("attackers") or {}))
    rounds = _rounds(r, src)
    try:
        state["removals"] = chain_run_removal(r)
    except (TypeError, ValueError, KeyError) as e:
        src.problems.append(f"report.json: malformed removal record ({type(e).__name__}: {e})")
    mark_undone(rounds, state["removals"])
    state["run"] = _header(r, src, strategies, colours)
    state["rounds"] = rounds
    state["in_progress"] = _in_progress(r, src, len(rounds))
    state["charts"] = charts(r, rounds, colours)
    return state


def _header(
    r: dict[str, Any], src: Sources, strategies: dict[str, str], colours: dict[str, str]
) -> dict[str, Any]:
    chain = r.get("chain") or {}
    privacy = r.get("privacy") or None
    keys = (
        "name",
        "status",
        "model",
        "lora_variant",
        "protocol",
        "aggregator",
        "server_lr",
        "rounds",
        "rounds_completed",
        "participants",
        "global_adapter",
        "error",
    )
    return {
        **{k: r.get(k) for k in keys},
        "participants_detail": [
            {
                "name": n,
                "strategy": strategies[n],
                "colour": colours.get(n),
                "domains": (r.get("participant_domains") or {}).get(n, []),
                "examples": (r.get("participant_examples") or {}).get(n),
                "account": (chain.get("accounts") or {}).get(n),
            }
            for n in sorted(strategies)
        ],
        "accuracy": r.get("accuracy") or {},
        "bytes": r.get("bytes") or {},
        "timings": r.get("timings") or {},
        "privacy": privacy,
        "chain": {k: chain.get(k) for k in ("backend", "contract", "stake", "head")} if chain else None,
        "head": src.head,
        "defense": r.get("defense"),
        "attacks": r.get("attacks") or [],
    }


def _rounds(r: dict[str, Any], src: Sources) -> list[dict[str, Any]]:
    """One entry per finished round, in order (what the report holds is final)."""
    chain = r.get("chain") or {}
    names = {str(a).lower(): n for n, a in (chain.get("accounts") or {}).items()}
    phases = group_rounds(src.txlog, names)
    times = round_finish_times(src.log)
    participants = int(r.get("participants") or 0)
    out = []
    for i, d in enumerate(r["rounds_detail"]):
        number = int(d.get("round", i)) + 1
        commitments = [c for c in d.get("commitments") or [] if isinstance(c, dict)]
        gas = {k: int(v) for k, v in (d.get("gas") or {}).items()}
        wire = d.get("bytes") or {}
        acc = d.get("accuracy") or {}
        privacy = d.get("privacy") or {}
        out.append(
            round_entry(
                number,
                round_id=d.get("round_id"),
                outcome=d.get("outcome") or ("aggregated" if d.get("global_out") else "kept"),
                proposers=d.get("proposers") or [c.get("participant") for c in commitments],
                voters=d.get("voters") or [],
                votes=d.get("votes") or {},
                judgements=d.get("judgements") or {},
                flagged=d.get("flagged") or [],
                excluded=d.get("excluded") or [],
                unavailable=d.get("unavailable") or [],
                slashes=d.get("slashes") or [],
                rewards=d.get("rewards") or {},
                stakes=d.get("stakes") or {},
                weights=d.get("weights") or {},
                gas=gas,
                gas_total=sum(gas.values()) if gas else None,
                bytes_up=wire.get("upload_total"),
                bytes_down=(wire.get("download_per_participant") or 0) * participants if wire else None,
                accuracy=acc,
                mean_accuracy=acc.get("mean"),
                backdoor=d.get("backdoor") or [],
                harmful=d.get("harmful") or [],
                epsilon=privacy.get("epsilon"),
                global_in=d.get("global_in"),
                global_out=d.get("global_out"),
                candidate=d.get("candidate"),
                candidates=d.get("candidates") or [],
                commitments=commitments,
                phases=phases[i]["phases"] if i < len(phases) else {},
                **times.get(number, {"finished_at": None, "seconds": None}),
            )
        )
    return out


def _in_progress(r: dict[str, Any], src: Sources, finished: int) -> dict[str, Any] | None:
    """The round being worked on when the run is still going: its number and the last phase the chain
    shows for it (its transactions past the last finished round), else what the run is doing."""
    if r.get("status") != "running":
        return None
    total = int(r["rounds"])
    if finished >= total:
        return {"round": None, "phase": "after the rounds: isolated baselines, export and report"}
    chain = r.get("chain") or {}
    names = {str(a).lower(): n for n, a in (chain.get("accounts") or {}).items()}
    groups = group_rounds(src.txlog, names)
    if len(groups) > finished:
        phases = groups[finished]["phases"]
        last = list(phases)[-1]
        blocks = phases[last]
        return {
            "round": finished + 1,
            "phase": last,
            "phases": phases,
            "detail": f"{last}: {blocks['txs']} transaction(s) up to block {blocks['last_block']}"
            + (
                "; finalized on chain, the run is evaluating the new global model"
                if last == "outcome"
                else ""
            ),
        }
    if finished == 0 and not (r.get("accuracy") or {}).get("base"):
        return {"round": 1, "phase": "evaluating the base model"}
    return {"round": finished + 1, "phase": "training (no transaction of this round yet)"}
