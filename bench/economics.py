"""Stake economics of the decentralised round: who gains and who loses by strategy, and where it breaks.

Every cell is a full simulated run through the contract (the same code as `consortium run`, protocol
"chain") on the smoke model. Two scenarios of `--rounds` rounds (default 60) with 20 participants:

- "10%": backdoor attackers 5% + colluding voters 5% of the stake, plus one free rider, one lazy voter
  and one no-show; everyone else honest.
- "30%": backdoor 15% + colluding voters 15%, plus the same three.
- "honest-vote" (issue 22 item 7): backdoor 10% who vote as honest voters do
  (`chain.attackers_collude = false`), plus the same three; only their updates can cost them anything.

For each: profit per strategy (stake + withdrawable balance after the last round, minus the stake put
in), outcomes (accepted with the honest or with the coalition's candidate, rejected, no quorum,
cancelled), gas per round, and a PNG of every participant's stake over the rounds by strategy.

The collusion sweep (`--sweep`, on by default, `--sweep-rounds` 20) runs a coalition of backdoor
attackers and colluding voters holding 20..70% of the (equal) stakes and nobody else dishonest: how
often the coalition's unscreened candidate is accepted, against the chance that it holds a majority of
a round's drawn voters (hypergeometric, equal stakes), and the coalition's profit against the honest.

Results: bench/results/economics.md, economics.json, economics_<scenario>_stakes.png and
economics_sweep.png (`--tag T`: economics_T.md, ...).

    python bench/economics.py                     # scenarios + sweep, about 20 minutes on 2 cores
    python bench/economics.py --rounds 80 --no-sweep --aggregator trimmed_mean
    python bench/economics.py --no-sweep --proposers 10 --tag slack   # 17 roles of 20: spare participants
    # item 7: the default aggregator plus the client-level probe fitted to these clients (docs/protocol.md)
    python bench/economics.py --no-sweep --aggregator fedavg --jobs 1 --tag bond_probe \
        --probe bench/results/economics_probe/ad48b8be19df*.safetensors
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import random
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import git_commit

from consortium.config import RunConfig, load_config
from consortium.defense import AGGREGATORS
from consortium.report import plot_stakes, stake_series

# The bench's settings on top of the smoke preset: a fast model, enough participants for 5% to be one.
BASE = [
    'model.name="tiny"',
    "train.local_steps=2",
    "data.n_train=40",
    "data.n_test=4",
    "eval.isolated_baseline=false",
]
# scenario label -> (backdoor fraction, colluding-voter fraction, attackers collude); each also has one free
# rider, one lazy voter and one no-show (fraction 0.05 = one of 20). "honest-vote": issue 22 item 7's
# poisoner, who votes as honest voters do, so only its updates can cost it anything.
SCENARIOS = {"10%": (0.05, 0.05, True), "30%": (0.15, 0.15, True), "honest-vote": (0.1, 0.0, False)}
SIDE = 0.05
SHARES = (0.2, 0.35, 0.5, 0.6, 0.7)
COLLUDERS = "colluding_voter"


def _specs(items: list[tuple[str, float]]) -> str:
    """A TOML array of inline tables for `attacks=` / `strategies=` overrides."""
    return "[" + ", ".join(f'{{kind="{k}", fraction={f!r}}}' for k, f in items if f > 0) + "]"


@dataclass
class Cell:
    """One simulated run: what it is called, its config overrides and the strategy counts it must give."""

    key: str
    kind: str  # "scenario" or "sweep"
    overrides: list[str]
    rounds: int
    expect: dict[str, int]
    share: float = 0.0  # sweep: the coalition's share of the participants (= of the stake at the start)
    meta: dict[str, Any] = field(default_factory=dict)


def slug(label: str) -> str:
    """A scenario label as it appears in file names ("10%" -> "10pct")."""
    return label.replace("%", "pct")


def scenario_cell(label: str, n: int, rounds: int, aggregator: str, seed: int) -> Cell:
    backdoor, colluding, collude = SCENARIOS[label]
    attacks = _specs([("backdoor", backdoor), ("free_rider", SIDE)])
    strategies = _specs([(COLLUDERS, colluding), ("lazy_voter", SIDE), ("no_show", SIDE)])
    ov = [
        *BASE,
        f"participants={n}",
        f"rounds={rounds}",
        f'aggregator="{aggregator}"',
        f"seed={seed}",
        f'name="economics-{slug(label)}"',
        f"attacks={attacks}",
        f"strategies={strategies}",
        f"chain.attackers_collude={str(collude).lower()}",
    ]
    k = lambda f: max(1, int(f * n + 1e-9))  # noqa: E731  (consortium.attacks.attackers_for)
    expect = {"backdoor": k(backdoor), "free_rider": k(SIDE)}
    expect |= {COLLUDERS: k(colluding)} if colluding else {}
    expect |= {"lazy_voter": k(SIDE), "no_show": k(SIDE)}
    expect["honest"] = n - sum(expect.values())
    return Cell(label, "scenario", ov, rounds, expect)


def sweep_cell(share: float, n: int, rounds: int, aggregator: str, seed: int) -> Cell:
    """Coalition of round(share * n): half (rounded up) backdoor attackers, the rest colluding voters."""
    members = round(share * n)
    attackers = math.ceil(members / 2)
    colluders = members - attackers
    ov = [
        *BASE,
        f"participants={n}",
        f"rounds={rounds}",
        f'aggregator="{aggregator}"',
        f"seed={seed}",
        f'name="economics-sweep-{round(100 * share)}"',
        f"attacks={_specs([('backdoor', attackers / n)])}",
        f"strategies={_specs([(COLLUDERS, colluders / n)])}",
    ]
    expect = {"backdoor": attackers, COLLUDERS: colluders, "honest": n - members}
    expect = {k: v for k, v in expect.items() if v}
    meta = {"attackers": attackers, "colluders": colluders}
    return Cell(f"sweep {round(100 * share)}%", "sweep", ov, rounds, expect, share, meta)


def cell_config(cell: Cell) -> RunConfig:
    return load_config(preset="smoke", overrides=cell.overrides)


# ---------------------------------------------------------------- running


def _worker_init() -> None:
    """One torch thread per worker (two-thread workers on 2 busy cores slow each other down)."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _run_cell(args: tuple[list[str], str]) -> dict[str, Any]:
    """Run one cell into `workdir`; the report dict plus its wall time."""
    from consortium.sim import Simulation

    overrides, workdir = args
    cfg = load_config(preset="smoke", overrides=overrides)
    t0 = time.perf_counter()
    run_dir = Simulation(cfg, Console(quiet=True)).run(Path(workdir), plots=False)
    report = json.loads((run_dir / "report.json").read_text())
    report["bench_seconds"] = time.perf_counter() - t0
    return report


def _rounds_done(workdir: Path) -> int:
    """Finished rounds of the run in `workdir`, from its log (cheap to poll)."""
    logs = list(workdir.glob("*/run.log"))
    if not logs:
        return 0
    try:
        return sum(1 for line in logs[0].read_text().splitlines() if line[9:].startswith("round "))
    except OSError:
        return 0


# ---------------------------------------------------------------- analysis


def coalition_of(report: dict[str, Any]) -> set[str]:
    """Who posts and votes for the unscreened candidate: every attacker plus the colluding voters
    (`ChainRoundRunner.coalition`; no attacker under `chain.attackers_collude = false`)."""
    if "coalition" in report["chain"]:
        return set(report["chain"]["coalition"])
    strategies = report["chain"]["strategies"]
    return set(report["attackers"]) | {n for n, s in strategies.items() if s == COLLUDERS}


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


@dataclass(frozen=True)
class DrawModel:
    """What decides a round's vote besides the stakes: roles, who is in the coalition, who commits an
    attack (the coalition posts its candidate only then), who never reveals, quorum and min stake."""

    proposers: int
    voters: int
    coalition: frozenset[str]
    attackers: frozenset[str]
    silent: frozenset[str]
    quorum_bps: int
    min_stake: float


def p_win_at(stakes: dict[str, float], m: DrawModel, rng: random.Random, samples: int) -> float:
    """Monte Carlo chance that the coalition wins a round drawn at these stakes: the contract's draw
    (stake-weighted, without replacement, the first P picks proposers and the next V voters; weight 0
    below min stake, the round cancelled when too few are eligible), at least one attacker proposing,
    quorum, and over half of the revealed voting stake. Everyone votes by strategy, so this is exact
    up to sampling."""
    names = sorted(stakes)
    weights = [stakes[n] if stakes[n] >= m.min_stake else 0.0 for n in names]
    if sum(1 for w in weights if w > 0) < m.proposers + m.voters:
        return 0.0
    wins = 0
    for _ in range(samples):
        w = list(weights)
        picks = []
        for _ in range(m.proposers + m.voters):
            r, acc, i = rng.random() * sum(w), 0.0, 0
            for i, x in enumerate(w):  # noqa: B007  (the index of the pick is what is kept)
                acc += x
                if x > 0 and r < acc:
                    break
            picks.append(names[i])
            w[i] = 0.0
        if not m.attackers & set(picks[: m.proposers]):
            continue
        voters = picks[m.proposers :]
        revealed = [v for v in voters if v not in m.silent]
        total = sum(stakes[v] for v in voters)
        got = sum(stakes[v] for v in revealed)
        mine = sum(stakes[v] for v in revealed if v in m.coalition)
        wins += got > 0 and got * 10_000 >= m.quorum_bps * total and 2 * mine > got
    return wins / samples


def analyse(report: dict[str, Any], samples: int = 400, seed: int = 0) -> dict[str, Any]:
    """The economic figures of one run, from its report dict alone."""
    chain = report["chain"]
    strategies: dict[str, str] = chain["strategies"]
    stake0 = float(chain["stake"])
    min_stake = chain["params"]["min_stake"] / 10**18
    model = DrawModel(
        chain["params"]["n_proposers"],
        chain["params"]["n_voters"],
        frozenset(coalition_of(report)),
        frozenset(report["attackers"]),
        frozenset(n for n, s in strategies.items() if s == "no_show"),
        chain["params"]["quorum_bps"],
        min_stake,
    )
    rng = random.Random(f"economics:{seed}")
    expected_wins = 0.0
    committed: dict[str, int] = dict.fromkeys(strategies, 0)
    flagged: dict[str, int] = dict.fromkeys(strategies, 0)
    excluded: dict[str, int] = dict.fromkeys(strategies, 0)  # in accepted rounds: the bond forfeited
    honest_slashes: dict[str, dict[str, float]] = {}
    coalition = coalition_of(report)
    rounds = report["rounds_detail"]
    series = stake_series(report)
    counts: dict[str, int] = {}
    for s in strategies.values():
        counts[s] = counts.get(s, 0) + 1

    rewards = dict.fromkeys(strategies, 0.0)
    # per participant and role: rounds held, ETH earned in it (a lazy voter earns as a voter without judging)
    roles = {n: {"proposer": [0, 0.0], "voter": [0, 0.0]} for n in strategies}
    slashed: dict[str, dict[str, float]] = {n: {} for n in strategies}
    outcomes = {"accepted_honest": 0, "accepted_coalition": 0, "rejected": 0, "no_quorum": 0, "cancelled": 0}
    gas, per_fn = [], {}
    coalition_posted = coalition_majority = 0
    honest_rejected = {"count": 0, "eth": 0.0, "rounds_without_attacker": 0}
    first_cancelled = None
    prev = dict.fromkeys(strategies, stake0)  # voting weight = the stake snapshot at the draw
    per_round = []
    for r in rounds:
        expected_wins += p_win_at(prev, model, rng, samples) if model.coalition else 0.0
        for c in r.get("commitments", []):
            committed[c["participant"]] += 1
        for who in r.get("flagged", []):
            flagged[who] += 1
        for who in r.get("excluded", []) if r["outcome"] == "accepted" else []:
            excluded[who] += 1
        total_gas = sum(r["gas"].values())
        gas.append(total_gas)
        for fn, g in r["gas"].items():
            per_fn[fn] = per_fn.get(fn, 0) + g
        coal_cands = [c for c in r["candidates"] if c["poster"] in coalition]
        won_coalition = r["outcome"] == "accepted" and any(c["hash"] == r["global_out"] for c in coal_cands)
        coalition_posted += bool(coal_cands)
        revealed = sum(prev[v] for v in r["votes"])
        coal_w = sum(prev[v] for v in r["votes"] if v in coalition)
        drawn_w = sum(prev[v] for v in r["voters"])
        drawn_coal_w = sum(prev[v] for v in r["voters"] if v in coalition)
        majority = bool(coal_cands) and revealed > 0 and 2 * coal_w > revealed
        coalition_majority += majority
        if r["outcome"] == "cancelled":
            outcomes["cancelled"] += 1
            if first_cancelled is None:
                first_cancelled = {
                    "round": r["round"] + 1,
                    "below_min_stake": {n: round(prev[n], 4) for n in strategies if prev[n] < min_stake},
                }
        elif r["outcome"] == "accepted":
            outcomes["accepted_coalition" if won_coalition else "accepted_honest"] += 1
        else:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        for who in r["proposers"]:
            roles[who]["proposer"][0] += 1
        for who in r["voters"]:
            roles[who]["voter"][0] += 1
        for who, eth in r["rewards"].items():
            rewards[who] += eth
            roles[who]["voter" if who in r["voters"] else "proposer"][1] += eth
        attackers_in = any(c["participant"] in report["attackers"] for c in r.get("commitments", []))
        hit_honest = False
        for s in r["slashes"]:
            slashed[s["who"]][s["reason"]] = slashed[s["who"]].get(s["reason"], 0.0) + s["eth"]
            if strategies[s["who"]] == "honest":
                hs = honest_slashes.setdefault(s["reason"], {"count": 0, "eth": 0.0})
                hs["count"] += 1
                hs["eth"] += s["eth"]
            if s["reason"] == "rejected" and s["who"] not in report["attackers"]:
                honest_rejected["count"] += 1
                honest_rejected["eth"] += s["eth"]
                hit_honest = True
        honest_rejected["rounds_without_attacker"] += hit_honest and not attackers_in
        per_round.append(
            {
                "round": r["round"] + 1,
                "outcome": "accepted_coalition" if won_coalition else r["outcome"],
                "coalition_posted": bool(coal_cands),
                "coalition_share_of_drawn_voters": drawn_coal_w / drawn_w if drawn_w else 0.0,
                "coalition_share_of_revealed": coal_w / revealed if revealed else 0.0,
                "gas": total_gas,
                "slashed_eth": sum(s["eth"] for s in r["slashes"]),
            }
        )
        if r.get("stakes"):
            prev = {n: r["stakes"].get(n, 0.0) for n in strategies}

    profit = {n: ys[-1] - stake0 for n, ys in series.items()}
    by_strategy: dict[str, Any] = {}
    for kind in sorted(counts, key=lambda k: (k != "honest", k)):
        names = [n for n, s in strategies.items() if s == kind]
        reasons: dict[str, float] = {}
        for n in names:
            for why, eth in slashed[n].items():
                reasons[why] = reasons.get(why, 0.0) + eth / len(names)
        by_strategy[kind] = {
            "n": len(names),
            "profit": _stats([profit[n] for n in names]),
            "rewards_mean": sum(rewards[n] for n in names) / len(names),
            "slashed_mean": reasons,
            "reward_per_role_round": {
                role: sum(roles[n][role][1] for n in names) / max(1, sum(roles[n][role][0] for n in names))
                for role in ("proposer", "voter")
            },
            "role_rounds_mean": {
                role: sum(roles[n][role][0] for n in names) / len(names) for role in ("proposer", "voter")
            },
            "committed": sum(committed[n] for n in names),
            "excluded": sum(excluded[n] for n in names),
            "flagged": sum(flagged[n] for n in names),
        }
    played = [g for g, r in zip(gas, rounds, strict=True) if r["outcome"] != "cancelled"]
    final_stake = {n: ys[-1] for n, ys in series.items()}
    total_final = sum(final_stake.values())
    return {
        "rounds": len(rounds),
        "counts": counts,
        "coalition": sorted(coalition, key=lambda n: int(n.removeprefix("org"))),
        "coalition_share_start": len(coalition) / len(strategies),
        "coalition_share_end": sum(final_stake[n] for n in coalition) / total_final if total_final else 0.0,
        "by_strategy": by_strategy,
        "coalition_profit": _stats([profit[n] for n in coalition]) if coalition else None,
        "outcomes": outcomes,
        "coalition_posted": coalition_posted,
        "coalition_majority_of_revealed": coalition_majority,
        "coalition_win_rate": outcomes["accepted_coalition"] / len(rounds),
        "first_cancelled": first_cancelled,
        "honest_slashed_as_rejected": honest_rejected,
        "honest_slashes_by_reason": honest_slashes,  # strategy "honest" only; "excluded" is the bond
        "gas_per_round": sum(played) / len(played) if played else 0.0,
        "gas_per_round_all": sum(gas) / len(gas),
        "gas_by_function_per_round": {fn: g / len(rounds) for fn, g in sorted(per_fn.items())},
        "final_accuracy": report["accuracy"].get("federated", {}).get("mean"),
        "final_asr": [b["asr"] for b in report.get("backdoor", {}).get("federated", [])],
        "expected_win_rate_at_stakes": expected_wins / len(rounds),
        "flag_rate_by_domain": flag_rates(report, committed, flagged),
        "participants": {
            n: {
                "strategy": strategies[n],
                "domains": report["participant_domains"][n],
                "committed": committed[n],
                "flagged": flagged[n],
                "excluded": excluded[n],
                "profit": profit[n],
            }
            for n in strategies
        },
        "per_round": per_round,
        "stake_series": series,
        "strategies": strategies,
        "seconds": report.get("bench_seconds"),
    }


def flag_rates(report: dict[str, Any], committed: dict[str, int], flagged: dict[str, int]) -> dict[str, Any]:
    """Share of the non-attackers' committed updates that the pipeline flagged, by data domain."""
    out: dict[str, Any] = {}
    for n, doms in report["participant_domains"].items():
        if n in report["attackers"] or not committed.get(n):
            continue
        key = "+".join(doms)
        c, f = out.get(key, (0, 0))
        out[key] = (c + committed[n], f + flagged[n])
    return {k: {"committed": c, "flagged": f, "rate": f / c} for k, (c, f) in sorted(out.items())}


def p_majority(n: int, proposers: int, voters: int, attackers: int, colluders: int) -> float:
    """Chance that the coalition wins a round with equal stakes and every voter revealing: it holds more
    than half of the drawn voters and at least one attacker is a proposer (else it posts no candidate).
    With equal weights the contract's draw is a uniform random (proposers, voters) split."""
    honest = n - attackers - colluders
    total = math.comb(n, voters)
    p = 0.0
    for xa in range(min(attackers, voters) + 1):
        for xc in range(min(colluders, voters - xa) + 1):
            xh = voters - xa - xc
            if xh > honest or 2 * (xa + xc) <= voters:
                continue
            ways = math.comb(attackers, xa) * math.comb(colluders, xc) * math.comb(honest, xh)
            rest, left = n - voters, attackers - xa
            no_attacker = math.comb(rest - left, proposers) / math.comb(rest, proposers)
            p += ways / total * (1 - no_attacker)
    return p


# ---------------------------------------------------------------- output


def _eth(x: float) -> str:
    return f"{x:+.2f}"


def _profit_cell(p: dict[str, float], n: int) -> str:
    return _eth(p["mean"]) if n == 1 else f"{_eth(p['mean'])} [{_eth(p['min'])}, {_eth(p['max'])}]"


def _slash_cell(reasons: dict[str, float]) -> str:
    return ", ".join(f"{why} {eth:.2f}" for why, eth in sorted(reasons.items())) or "-"


def markdown(results: dict[str, Any], stem: str) -> str:
    s = results["settings"]
    out = [
        "# Stake economics of the decentralised round",
        "",
        f"`bench/economics.py`: model `{s['model']}`, {s['participants']} participants "
        f"({s['proposers']} proposers + {s['voters']} voters drawn per round), aggregator "
        f"`{s['aggregator']}`, stake {s['stake']:g} ETH each, reward {s['reward_per_round']:g} ETH "
        f"per round, slashes {s['slash_rejected_bps'] / 100:g}% rejected / "
        f"{s['slash_minority_bps'] / 100:g}% minority / "
        f"{s['slash_no_show_bps'] / 100:g}% no-show, proposal bond {s.get('proposal_bond_bps', 0) / 100:g}%, "
        f"probe {(s.get('probe') or 'none')[:12]}, min stake {s['min_stake']:g} ETH, seed {s['seed']}, "
        f"commit {s['commit']}. "
        f"Wall time {results['seconds'] / 60:.1f} min ({s['jobs']} job(s)).",
        "",
        "Profit = stake + withdrawable balance after the last round − the stake put in (ETH): mean "
        "[min, max] over the participants playing the strategy. Slashed and rewards: ETH per participant "
        "over the run. The coalition is every attacker (backdoor and free rider) plus the colluding voters: "
        "all of them post and vote for the unscreened FedAvg candidate.",
        "",
    ]
    for label, a in results["scenarios"].items():
        o = a["outcomes"]
        out += [
            f"## Scenario {label} ({a['rounds']} rounds)",
            "",
            "Strategies: " + ", ".join(f"{k} {v}" for k, v in a["counts"].items()) + f". Coalition "
            f"{', '.join(a['coalition'])}: {100 * a['coalition_share_start']:.0f}% of the stake at the "
            f"start, {100 * a['coalition_share_end']:.1f}% at the end.",
            "",
            "| strategy | n | profit (ETH) | rewards | slashed (by reason; excluded = the bond) "
            "| rounds as proposer / voter | reward per proposer round / voter round "
            "| updates committed / excluded / flagged |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind, b in a["by_strategy"].items():
            rr, per = b["role_rounds_mean"], b["reward_per_role_round"]
            out.append(
                f"| {kind} | {b['n']} | {_profit_cell(b['profit'], b['n'])} | {b['rewards_mean']:.2f} "
                f"| {_slash_cell(b['slashed_mean'])} | {rr['proposer']:.1f} / {rr['voter']:.1f} "
                f"| {per['proposer']:.4f} / {per['voter']:.4f} "
                f"| {b['committed']} / {b['excluded']} / {b['flagged']} |"
            )
        fc = a["first_cancelled"]
        out += [
            "",
            "| accepted (honest candidate) | accepted (coalition's) | rejected | no quorum | cancelled |",
            "|---|---|---|---|---|",
            f"| {o['accepted_honest']} | {o['accepted_coalition']} | {o['rejected']} | {o['no_quorum']} "
            f"| {o['cancelled']} |",
            "",
            f"- Coalition candidate posted in {a['coalition_posted']} rounds; the coalition held a "
            f"majority of the revealed voting stake in {a['coalition_majority_of_revealed']} of them and won "
            f"{o['accepted_coalition']} (expected at the stakes of each draw: "
            f"{a['expected_win_rate_at_stakes'] * a['rounds']:.1f}).",
            "- Share of the non-attackers' committed updates flagged by the pipeline (and so slashed "
            "when its candidate wins), by data domain: "
            + ", ".join(
                f"{d} {100 * v['rate']:.0f}% ({v['flagged']}/{v['committed']})"
                for d, v in a["flag_rate_by_domain"].items()
            )
            + ".",
            "- Honest organisations (strategy `honest`), every slash and forfeited bond by reason: "
            + (
                ", ".join(
                    f"{why} {v['count']} times ({v['eth']:.2f} ETH)"
                    for why, v in sorted(a["honest_slashes_by_reason"].items())
                )
                or "none"
            )
            + ".",
            f"- Non-attackers slashed as `rejected` (flagged by the accepted candidate): "
            f"{a['honest_slashed_as_rejected']['count']} times, {a['honest_slashed_as_rejected']['eth']:.2f} "
            f"ETH in all; in {a['honest_slashed_as_rejected']['rounds_without_attacker']} rounds no attacker "
            "had committed at all.",
            "- "
            + (
                f"From round {fc['round']} on every round is cancelled: "
                + ", ".join(
                    f"{n} ({a['strategies'][n]}) {v:.3f} ETH" for n, v in fc["below_min_stake"].items()
                )
                + " fell below the minimum stake, which leaves fewer eligible participants than roles."
                if fc
                else "No round was cancelled."
            ),
            f"- Gas per played round {a['gas_per_round']:,.0f} "
            f"({a['gas_per_round'] / s['participants']:,.0f} per participant); over all rounds, "
            "cancelled included, "
            f"{a['gas_per_round_all']:,.0f}.",
            "",
            f"![stakes {label}]({stem}_{slug(label)}_stakes.png)",
            "",
        ]
    if results.get("sweep"):
        out += [
            f"## Collusion sweep ({results['sweep'][0]['rounds']} rounds each)",
            "",
            "A coalition of backdoor attackers (half, rounded up) and colluding voters; everyone else "
            "honest, all with equal stakes at the start. Won: rounds in which the coalition's unscreened "
            "candidate was accepted. Expected: the chance per round that the coalition holds a strict "
            "majority of the drawn voters with at least one attacker among the proposers: with equal "
            "stakes (hypergeometric), and at the stakes of each draw (Monte Carlo of the contract's draw, "
            "mean over the rounds). Profit: mean per participant (ETH).",
            "",
            "| coalition share | members (attackers + colluders) | candidate posted | majority of revealed "
            "| won | expected, equal stakes | expected, stakes at the draw | coalition profit "
            "| honest profit | coalition stake at end |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in results["sweep"]:
            hp = c["by_strategy"].get("honest", {}).get("profit")
            out.append(
                f"| {100 * c['share']:.0f}% | {c['attackers']} + {c['colluders']} | {c['coalition_posted']} "
                f"| {c['coalition_majority_of_revealed']} "
                f"| {c['outcomes']['accepted_coalition']}/{c['rounds']} "
                f"({100 * c['coalition_win_rate']:.0f}%) | {100 * c['expected_win_rate']:.0f}% "
                f"| {100 * c['expected_win_rate_at_stakes']:.0f}% "
                f"| {_eth(c['coalition_profit']['mean'])} | {_eth(hp['mean']) if hp else '-'} "
                f"| {100 * c['coalition_share_end']:.1f}% |"
            )
        out += ["", f"![sweep]({stem}_sweep.png)", ""]
        out += [results["breakpoint"], ""]
    return "\n".join(out)


def breakpoint_text(sweep: list[dict[str, Any]]) -> str:
    """Where the coalition starts winning: the first share with a won round, and with most rounds won."""
    first = next((c for c in sweep if c["outcomes"]["accepted_coalition"] > 0), None)
    most = next((c for c in sweep if c["coalition_win_rate"] > 0.5), None)
    parts = []
    if first is None:
        parts.append("The coalition's candidate was never accepted in the sweep.")
    else:
        parts.append(
            f"The coalition first got its candidate accepted at {100 * first['share']:.0f}% of the stake "
            f"({first['outcomes']['accepted_coalition']}/{first['rounds']} rounds; "
            f"{100 * first['expected_win_rate']:.0f}% expected per round)"
        )
    if most is not None:
        parts.append(
            f"and in most rounds from {100 * most['share']:.0f}% "
            f"({100 * most['coalition_win_rate']:.0f}% of the rounds)."
        )
    elif first is not None:
        parts[-1] += "; it never won most rounds."
    return " ".join(parts)


def plot_sweep(sweep: list[dict[str, Any]], n: int, proposers: int, voters: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [100 * c["share"] for c in sweep]
    ax.plot(xs, [100 * c["coalition_win_rate"] for c in sweep], marker="o", label="measured: coalition won")
    grid = list(range(0, n + 1))
    ax.plot(
        [100 * m / n for m in grid],
        [100 * p_majority(n, proposers, voters, math.ceil(m / 2), m - math.ceil(m / 2)) for m in grid],
        ls="--",
        color="gray",
        label="expected (equal stakes)",
    )
    ax.plot(
        xs,
        [100 * c["expected_win_rate_at_stakes"] for c in sweep],
        marker="x",
        ls=":",
        label="expected at the stakes of each draw",
    )
    ax.set_xlabel("coalition share of the stake at the start (%)")
    ax.set_ylabel("rounds its unscreened candidate is accepted (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"Collusion: {n} participants, {voters} voters drawn per round")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def print_tables(console: Console, results: dict[str, Any]) -> None:
    for label, a in results["scenarios"].items():
        t = Table(title=f"Scenario {label}: profit per strategy after {a['rounds']} rounds (ETH)")
        for col in ("strategy", "n", "profit mean", "min", "max", "rewards", "slashed"):
            t.add_column(col, justify="left" if col in ("strategy", "slashed") else "right")
        for kind, b in a["by_strategy"].items():
            p = b["profit"]
            t.add_row(
                kind,
                str(b["n"]),
                _eth(p["mean"]),
                _eth(p["min"]),
                _eth(p["max"]),
                f"{b['rewards_mean']:.2f}",
                _slash_cell(b["slashed_mean"]),
            )
        console.print(t)
        o = a["outcomes"]
        console.print(
            f"  accepted {o['accepted_honest']} honest + {o['accepted_coalition']} coalition, rejected "
            f"{o['rejected']}, no quorum {o['no_quorum']}, cancelled {o['cancelled']}; gas/round "
            f"{a['gas_per_round']:,.0f}"
            + (f"; cancelled from round {a['first_cancelled']['round']}" if a["first_cancelled"] else "")
        )
    if results.get("sweep"):
        t = Table(title="Collusion sweep")
        cols = (
            "share",
            "posted",
            "majority",
            "won",
            "expected",
            "at stakes",
            "coalition profit",
            "honest profit",
        )
        for col in cols:
            t.add_column(col, justify="right")
        for c in results["sweep"]:
            hp = c["by_strategy"].get("honest", {}).get("profit")
            t.add_row(
                f"{100 * c['share']:.0f}%",
                str(c["coalition_posted"]),
                str(c["coalition_majority_of_revealed"]),
                f"{c['outcomes']['accepted_coalition']}/{c['rounds']}",
                f"{100 * c['expected_win_rate']:.0f}%",
                f"{100 * c['expected_win_rate_at_stakes']:.0f}%",
                _eth(c["coalition_profit"]["mean"]),
                _eth(hp["mean"]) if hp else "-",
            )
        console.print(t)
        console.print(results["breakpoint"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=60, help="rounds of the two main scenarios")
    ap.add_argument("--participants", type=int, default=20)
    ap.add_argument("--aggregator", default="multi_krum", choices=sorted(AGGREGATORS))
    ap.add_argument(
        "--scenarios", action=argparse.BooleanOptionalAction, default=True, help="the 10%% and 30%% scenarios"
    )
    ap.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True, help="collusion sweep")
    ap.add_argument("--sweep-rounds", type=int, default=20)
    ap.add_argument("--shares", default=",".join(map(str, SHARES)), help="coalition shares of the sweep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel")
    ap.add_argument("--proposers", type=int, help="chain.n_proposers (default: participants - voters)")
    ap.add_argument("--voters", type=int, help="chain.n_voters (default: half of the participants)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--tag", default="", help="suffix of the result files: economics_<tag>.md, ...")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, comma-separated")
    ap.add_argument("--probe", type=Path, help="a client-level probe artifact (<sha256>.safetensors)")
    args = ap.parse_args(argv)
    labels = [x for x in args.only.split(",") if x]
    if unknown := [x for x in labels if x not in SCENARIOS]:
        ap.error(f"--only: unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    if args.probe is not None and not (args.probe.is_file() and len(args.probe.stem) == 64):
        ap.error(f"--probe: {args.probe} is not a <sha256>.safetensors probe artifact")
    stem = "economics" + (f"_{args.tag}" if args.tag else "")
    console = Console()
    n = args.participants
    cells = [scenario_cell(label, n, args.rounds, args.aggregator, args.seed) for label in labels]
    cells = cells if args.scenarios else []
    if args.sweep:
        shares = [float(x) for x in args.shares.split(",") if x]
        cells += [sweep_cell(s, n, args.sweep_rounds, args.aggregator, args.seed) for s in shares]
    extra = [f"chain.n_proposers={args.proposers}"] if args.proposers else []
    extra += [f"chain.n_voters={args.voters}"] if args.voters else []
    if args.probe is not None:
        extra += [f'probe.artifact="{args.probe.stem}"', f'probe.dir="{args.probe.parent.resolve()}"']
    for c in cells:
        c.overrides += extra
    configs = {c.key: cell_config(c) for c in cells}  # a bad setting fails before any run starts
    cfg0 = configs[cells[0].key]
    proposers, voters = cfg0.chain.roles(n)
    args.out.mkdir(parents=True, exist_ok=True)
    commit = git_commit()  # before the runs: the code they import

    t0 = time.perf_counter()
    reports: dict[str, dict[str, Any]] = {}
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    # the longest cells first, so that two workers finish together
    order = sorted(cells, key=lambda c: -c.rounds)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(*cols, console=console) as progress,
        cf.ProcessPoolExecutor(args.jobs, initializer=_worker_init) as pool,
    ):
        tasks, futures, dirs = {}, {}, {}
        for c in order:
            dirs[c.key] = Path(tmp) / f"cell{len(dirs)}"
            dirs[c.key].mkdir()
            tasks[c.key] = progress.add_task(f"{c.key:>10} rounds", total=c.rounds)
            futures[pool.submit(_run_cell, (c.overrides, str(dirs[c.key])))] = c.key
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=2.0)
            for fut in done:
                key = futures[fut]
                reports[key] = fut.result()
                progress.update(tasks[key], completed=reports[key]["rounds_completed"])
            for fut in pending:
                key = futures[fut]
                progress.update(tasks[key], completed=_rounds_done(dirs[key]))

    results: dict[str, Any] = {"scenarios": {}, "sweep": []}
    for c in cells:
        rep = reports[c.key]
        a = analyse(rep, seed=args.seed)
        if a["counts"] != c.expect:
            raise SystemExit(f"{c.key}: strategies {a['counts']} in the report, expected {c.expect}")
        if c.kind == "scenario":
            results["scenarios"][c.key] = a
            plot_stakes(rep, args.out / f"{stem}_{slug(c.key)}_stakes.png")
        else:
            a |= {"share": c.share, **c.meta}
            a["expected_win_rate"] = p_majority(
                n, proposers, voters, c.meta["attackers"], c.meta["colluders"]
            )
            results["sweep"].append(a)
    cc = cfg0.chain
    results["settings"] = {
        "model": cfg0.model.name,
        "participants": n,
        "proposers": proposers,
        "voters": voters,
        "aggregator": args.aggregator,
        "rounds": args.rounds,
        "sweep_rounds": args.sweep_rounds if args.sweep else None,
        "seed": args.seed,
        "jobs": args.jobs,
        "commit": commit,
        "stake": cc.stake,
        "min_stake": cc.min_stake,
        "reward_per_round": cc.reward_per_round,
        "reward_pool": cc.reward_pool,
        "slash_rejected_bps": cc.slash_rejected_bps,
        "slash_minority_bps": cc.slash_minority_bps,
        "slash_no_show_bps": cc.slash_no_show_bps,
        "quorum_bps": cc.quorum_bps,
        "proposal_bond_bps": cc.proposal_bond_bps,
        "probe": cfg0.probe.artifact,
        "overrides": {c.key: c.overrides for c in cells},
    }
    results["seconds"] = time.perf_counter() - t0
    if results["sweep"]:
        plot_sweep(results["sweep"], n, proposers, voters, args.out / f"{stem}_sweep.png")
        results["breakpoint"] = breakpoint_text(results["sweep"])
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(results, stem))
    print_tables(console, results)
    files = [f"{stem}.md", f"{stem}.json"]
    files += [f"{stem}_{slug(k)}_stakes.png" for k in results["scenarios"]]
    files += [f"{stem}_sweep.png"] if results["sweep"] else []
    console.print(
        f"wall time {results['seconds'] / 60:.1f} min; wrote " + ", ".join(str(args.out / f) for f in files)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
