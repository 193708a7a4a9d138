"""Attacks x defences x malicious fraction: clean accuracy, backdoor success and who got flagged.

Every cell is a full simulated run (the same code as `consortium run`) with one attack hitting a
fraction of the participants and one aggregation rule; the no-attack row gives each defence's clean
reference. Results: a Markdown table, heatmap PNGs and the raw figures as JSON.

    python bench/robustness.py                          # smoke model, full grid
    python bench/robustness.py --model demo             # SmolLM2-135M-Instruct (slow on CPU: narrow it)
    python bench/robustness.py --attacks backdoor --fractions 0.3 --defenses fedavg,flame
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.attacks import ATTACK_KINDS
from consortium.config import RunConfig, _merge, preset_dict
from consortium.defense import AGGREGATORS
from consortium.sim import Simulation

FRACTIONS = (0.1, 0.3, 0.45)
# The bench's own settings on top of the preset: enough participants for 10% to be one attacker,
# no isolated baselines (not what this bench measures).
SETTINGS: dict[str, dict[str, Any]] = {
    # the random-init tiny model cannot learn anything under LoRA; its warmed-up twin can (model.warm)
    "smoke": {
        "participants": 10,
        "rounds": 3,
        "model": {"name": "tiny-warm"},
        "lora": {
            "r": 8,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        },
        "train": {"local_steps": 4, "lr": 1e-2},
        "data": {
            "domains": ["arithmetic", "units", "dates", "strings", "policy"],
            "n_train": 40,
            "n_test": 10,
        },
        "eval": {"isolated_baseline": False},
    },
    "demo": {"participants": 10, "rounds": 3, "eval": {"isolated_baseline": False}},
}


def cell_config(
    model: str, attack: str | None, fraction: float, defense: str, seed: int, protocol: str = "central"
) -> RunConfig:
    data = _merge(preset_dict(model), SETTINGS[model])
    data = _merge(
        data,
        {
            "name": f"bench-{attack or 'none'}-{defense}",
            "aggregator": defense,
            "seed": seed,
            "protocol": protocol,
        },
    )
    # the no-attack cell still measures the backdoor (fraction 0): its ASR is the false positive floor
    data["attacks"] = [{"kind": attack or "backdoor", "fraction": fraction if attack else 0.0}]
    return RunConfig.model_validate(data)


def warm_base(model: str) -> None:
    """Load the base model once so a first-use build (tiny-warm) is cached before the workers start."""
    from consortium.model import load_base

    name = _merge(preset_dict(model), SETTINGS[model])["model"]["name"]
    load_base(name)


def run_cell(cfg: RunConfig, workdir: Path) -> dict[str, Any]:
    sim = Simulation(cfg, console=Console(file=io.StringIO()))
    run_dir = sim.run(workdir, plots=False)
    report = json.loads((run_dir / "report.json").read_text())
    rounds = report["rounds_detail"]
    attackers = set(report["attackers"])
    everyone = set(report["participant_domains"])
    honest = everyone - attackers
    # a chain round screens only its drawn proposers; a fedavg round, everyone
    proposed = [set(r.get("proposers", everyone)) for r in rounds]
    flagged = [set(r.get("flagged", [])) for r in rounds]
    caught = sum(len(f & attackers) for f in flagged)
    wrongly = sum(len(f & honest) for f in flagged)
    attacker_rounds = sum(len(p & attackers) for p in proposed)
    honest_rounds = sum(len(p & honest) for p in proposed)
    bd = report["backdoor"].get("federated", [{}])[0]
    chain = {}
    if report.get("protocol") == "chain":
        chain = {
            "rejected_rounds": sum(r.get("outcome") != "accepted" for r in rounds) / len(rounds),
            "coalition_wins": sum(
                any(
                    c["hash"] == r["global_out"] and c["poster"] in attackers for c in r.get("candidates", [])
                )
                for r in rounds
            )
            / len(rounds),
        }
    return chain | {
        "clean": report["accuracy"]["federated"]["mean"],
        "asr": bd.get("asr", math.nan),
        "false_trigger": bd.get("false_trigger", math.nan),
        "flag_recall": caught / attacker_rounds if attacker_rounds else math.nan,
        "flag_fpr": wrongly / honest_rounds if honest_rounds else math.nan,
        "defense_s_per_round": sum(r.get("defense_seconds", 0.0) for r in rounds) / len(rounds),
        "attackers": sorted(attackers),
    }


def _worker_init() -> None:
    """One torch thread per worker: on a busy machine two-thread workers slow each other down ~10x."""
    import torch

    torch.set_num_threads(1)


def _cell_job(args: tuple[str, str | None, float, str, int, str, str]) -> dict[str, Any]:
    model, attack, frac, defense, seed, protocol, tmp = args
    return run_cell(cell_config(model, attack, frac, defense, seed, protocol), Path(tmp))


def _fmt(v: float, pct: bool = True, sd: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    text = f"{100 * v:.0f}" if pct else f"{v:.3f}"
    return text if sd is None or math.isnan(sd) else text + (f" ± {100 * sd:.0f}" if pct else f" ± {sd:.3f}")


def combine(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Each cell's figures as the mean over the seeds that have it, with the sample standard deviation
    under `<metric>_sd` (NaN for one seed) and the count under `seeds`: one seed's 100 test questions
    put a point of clean accuracy at one question, so a claim needs the spread."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in per_seed for k in r):
        cells = [r[key] for r in per_seed if key in r]
        row: dict[str, Any] = {"seeds": len(cells), "seeds_of": len(per_seed)}
        for metric, v in cells[0].items():
            if not isinstance(v, (int, float)):
                continue
            vals = [c[metric] for c in cells if not math.isnan(c.get(metric, math.nan))]
            row[metric] = sum(vals) / len(vals) if vals else math.nan
            row[f"{metric}_sd"] = (
                math.sqrt(sum((x - row[metric]) ** 2 for x in vals) / (len(vals) - 1))
                if len(vals) > 1
                else math.nan
            )
        out[key] = row
    return out


def _cell(cell: dict[str, Any], metric: str) -> str:
    """A table cell: percent, ± sd over seeds when there are several, and their count when only some
    seeds have this cell (`seeds_of`: how many the table is over)."""
    text = _fmt(cell[metric], sd=cell.get(f"{metric}_sd"))
    return (
        text
        if cell.get("seeds", 1) >= cell.get("seeds_of", 1) or text == "-"
        else f"{text} (n={cell['seeds']})"
    )


def markdown(results: dict[str, Any], defenses: list[str], rows: list[tuple[str, float]], title: str) -> str:
    out = [f"# Robustness grid: {title}", ""]
    for metric, label in (
        ("asr", "Backdoor attack success rate (%), lower is better"),
        ("clean", "Clean exact-match accuracy (%), mean over domains"),
        ("flag_recall", "Attackers flagged (% of attacker-rounds)"),
        ("flag_fpr", "Honest participants flagged (% of honest-rounds)"),
        *(
            (
                ("rejected_rounds", "Rounds not accepted by the vote (%)"),
                ("coalition_wins", "Rounds the attackers' candidate won (%)"),
            )
            if any("rejected_rounds" in r for r in results.values())
            else ()
        ),
    ):
        out += [f"## {label}", "", "| attack | fraction | " + " | ".join(defenses) + " |"]
        out.append("|---|---|" + "---|" * len(defenses))
        for attack, frac in rows:
            cells = [_cell(results[f"{attack}|{frac}|{d}"], metric) for d in defenses]
            out.append(f"| {attack} | {frac:.0%} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Defence time per round (s)", "", "| defence | seconds |", "|---|---|"]
    for d in defenses:
        times = [v["defense_s_per_round"] for k, v in results.items() if k.endswith(f"|{d}")]
        out.append(f"| {d} | {sum(times) / len(times):.4f} |")
    return "\n".join(out) + "\n"


def heatmap(
    results: dict[str, Any],
    defenses: list[str],
    rows: list[tuple[str, float]],
    metric: str,
    path: Path,
    title: str,
) -> None:
    values = [[results[f"{a}|{f}|{d}"][metric] for d in defenses] for a, f in rows]
    fig, ax = plt.subplots(figsize=(0.9 * len(defenses) + 3, 0.35 * len(rows) + 1.8))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="magma_r" if metric == "asr" else "viridis", aspect="auto")
    ax.set_xticks(range(len(defenses)), defenses, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [f"{a} {f:.0%}" for a, f in rows], fontsize=8)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="gray")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _pct(cell: dict[str, Any], metric: str) -> str:
    """A cell's figure in percent with one decimal, and its spread over seeds when it has one."""
    v, sd = cell.get(metric, math.nan), cell.get(f"{metric}_sd", math.nan)
    return f"{100 * v:.1f}%" + ("" if math.isnan(sd) else f" ± {100 * sd:.1f}")


def headline(results: dict[str, Any], defenses: list[str]) -> str:
    """The issue's target at 30% backdoor: best defence vs FedAvg."""
    key = "backdoor|0.3|{}"
    if key.format("fedavg") not in results:
        return "headline needs the backdoor 30% cell with fedavg"
    base = results[key.format("fedavg")]["asr"]
    best = min(
        (d for d in defenses if key.format(d) in results),
        key=lambda d: (results[key.format(d)]["asr"], -results[key.format(d)]["clean"]),
    )
    r = results[key.format(best)]
    cut = (1 - r["asr"] / base) if base > 0 else math.nan
    return (
        f"30% backdoor attackers: FedAvg ASR {100 * base:.1f}%; "
        f"best defence `{best}` ASR {100 * r['asr']:.1f}% "
        f"(cut {100 * cut:.0f}% relative), clean accuracy {_pct(r, 'clean')} vs "
        f"{_pct(results.get('none|0.0|fedavg', {}), 'clean')} for FedAvg without attack"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", choices=sorted(SETTINGS), default="smoke", help="preset whose model and task to use"
    )
    ap.add_argument("--attacks", default=",".join(ATTACK_KINDS))
    ap.add_argument("--defenses", default=",".join(sorted(AGGREGATORS, key=lambda n: (n != "fedavg", n))))
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma list, e.g. 0,1,2: tables give mean ± sd over them")
    ap.add_argument(
        "--protocol",
        choices=("central", "chain"),
        default="central",
        help="central: every participant trains every round; chain: drawn proposers, validator votes",
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cells run in parallel")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument(
        "--render-only", action="store_true", help="no runs: tables from the finished cells (complete rows)"
    )
    args = ap.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    defenses = [d for d in args.defenses.split(",") if d]
    fractions = [float(f) for f in args.fractions.split(",") if f]
    unknown = [a for a in attacks if a not in ATTACK_KINDS] + [d for d in defenses if d not in AGGREGATORS]
    if unknown:
        print(f"unknown attack/defence: {', '.join(unknown)}", file=sys.stderr)
        return 2
    rows = [("none", 0.0)] + [(a, f) for a in attacks for f in fractions]
    seeds = [int(x) for x in args.seeds.split(",") if x] if args.seeds else [args.seed]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (
        f"robustness_{args.model}" + ("" if args.protocol == "central" else f"_{args.protocol}")
    )
    # finished cells are kept in a partial file per seed as they complete, so an interrupted grid resumes
    partials = {seed: stem.with_name(f"{stem.name}_seed{seed}.partial.json") for seed in seeds}
    per_seed: dict[int, dict[str, Any]] = {
        seed: json.loads(p.read_text()) if p.is_file() else {} for seed, p in partials.items()
    }
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    # validate every cell's config up front: a bad grid fails before hours of work, not during
    cells = {f"{a}|{f}|{d}": (a, f, d) for a, f in rows for d in defenses}
    for a, f, d in cells.values():
        cell_config(args.model, None if a == "none" else a, f, d, seeds[0], args.protocol)
    if args.render_only:
        # a row is shown when every defence has it for some seed; a cell with fewer seeds says so
        rows = [
            (a, f)
            for a, f in rows
            if all(any(f"{a}|{f}|{d}" in per_seed[s] for s in seeds) for d in defenses)
        ]
        cells = {k: v for k, v in cells.items() if (v[0], v[1]) in rows}
        if not rows:
            print(f"no complete row in {', '.join(map(str, partials.values()))}", file=sys.stderr)
            return 2
    else:
        warm_base(args.model)  # build the cached base model once, not in every worker
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(*cols) as progress,
        cf.ProcessPoolExecutor(args.jobs, initializer=_worker_init) as pool,
    ):
        # attack rows first: the no-attack reference row is the cheapest to add later
        todo = sorted(
            ((seed, k, v) for seed in seeds for k, v in cells.items() if k not in per_seed[seed]),
            key=lambda t: (t[2][0] == "none", t[0]),
        )
        if args.render_only:
            todo = []
        total = len(cells) * len(seeds)
        task = progress.add_task("robustness grid", total=total, completed=total - len(todo))
        futures = {
            pool.submit(
                _cell_job, (args.model, None if a == "none" else a, f, d, seed, args.protocol, tmp)
            ): (seed, key)
            for seed, key, (a, f, d) in todo
        }
        for fut in cf.as_completed(futures):
            seed, key = futures[fut]
            per_seed[seed][key] = fut.result()
            partials[seed].write_text(json.dumps(per_seed[seed], indent=1))
            progress.advance(task)
    results = combine([{k: per_seed[seed][k] for k in cells if k in per_seed[seed]} for seed in seeds])
    which = f"seeds {','.join(map(str, seeds))} (mean ± sd)" if len(seeds) > 1 else f"seed {seeds[0]}"
    title = (
        f"{args.model} model, {SETTINGS[args.model]['participants']} participants, {which}, "
        f"protocol {args.protocol}"
    )
    text = markdown(results, defenses, rows, title) + "\n" + headline(results, defenses) + "\n"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    heatmap(results, defenses, rows, "asr", stem.with_name(stem.name + "_asr.png"), "Backdoor ASR (%)")
    heatmap(results, defenses, rows, "clean", stem.with_name(stem.name + "_clean.png"), "Clean accuracy (%)")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
