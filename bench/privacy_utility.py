"""Privacy against utility and traffic: LoRA variants x target ε, clean accuracy, bytes, time.

Every cell is a full simulated run (the same code as `consortium run`, protocol `fedavg` by default so
that every organisation's update enters every round and votes do not blur the comparison) with one
LoRA variant and central client-level DP calibrated to a target ε over the run (δ = 1e-5, RDP).

The clip bound C of a variant is the median pre-clip update norm of its ε = ∞ run (which runs first,
with DP on at z = 0 and an unreachable clip, so nothing changes but the norms are recorded): clipping
at the median is the usual operating point (Andrew et al., 2021, adaptive clipping targets it).
`flora` refuses DP (its factors' clip does not bound the product; docs/lora_variants.md), so it only
has an ε = ∞ cell. Results: bench/results/privacy_utility_<model>.md, .json and .png.

    python bench/privacy_utility.py                         # smoke (tiny-warm), all variants, ∞/8/2
    python bench/privacy_utility.py --model demo --jobs 1   # SmolLM2-135M-Instruct: slow on CPU
    python bench/privacy_utility.py --variants ffa,lora --epsilons inf,8
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.config import RunConfig, _merge, preset_dict
from consortium.sim import Simulation

sys.path.insert(0, str(Path(__file__).parent))  # robustness.py beside this file
from robustness import SETTINGS as ROBUSTNESS_SETTINGS

VARIANTS = ("lora", "ffa", "flora", "fedsb")
EPSILONS = (math.inf, 8.0, 2.0)
DELTA = 1e-5
# the bench's own settings on top of each preset: the robustness grid's smoke task (a model that learns
# under LoRA, enough participants); the demo preset as it is, without isolated baselines
SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": ROBUSTNESS_SETTINGS["smoke"],
    "demo": {"eval": {"isolated_baseline": False}},
}


def cell_config(
    model: str, variant: str, eps: float, clip: float | None, seed: int, protocol: str
) -> RunConfig:
    """One cell's run config. ε = ∞: DP on at z = 0 with an unreachable clip (records the norms)."""
    data = _merge(preset_dict(model), SETTINGS[model])
    privacy: dict[str, Any] = {"mode": "off"}
    if math.isinf(eps) and variant != "flora":
        privacy = {"mode": "central", "clip": 1e9, "noise_multiplier": 0.0}
    elif not math.isinf(eps):
        privacy = {"mode": "central", "clip": clip, "target_epsilon": eps, "delta": DELTA}
    return RunConfig.model_validate(
        _merge(
            data,
            {
                "name": f"privacy-{variant}-eps{eps}",
                "seed": seed,
                "protocol": protocol,
                "lora": {"variant": variant},
                "privacy": privacy,
            },
        )
    )


def run_cell(cfg: RunConfig, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    run_dir = Simulation(cfg, console=Console(file=io.StringIO())).run(workdir, plots=False)
    seconds = time.perf_counter() - t0
    report = json.loads((run_dir / "report.json").read_text())
    rounds = report["rounds_detail"]
    dp = [(r.get("info") or {}).get("dp") or {} for r in rounds]
    norms = [d["pre_clip_norm_median"] for d in dp if "pre_clip_norm_median" in d]
    return {
        "clean": report["accuracy"]["federated"]["mean"],
        "base": report["accuracy"]["base"]["mean"],
        "per_domain": {k: v for k, v in report["accuracy"]["federated"].items() if k != "mean"},
        "epsilon": (report.get("privacy") or {}).get("epsilon"),
        "noise_multiplier": next((d.get("noise_multiplier_effective") for d in dp if d), None),
        "median_norm": statistics.median(norms) if norms else None,
        "clipped_fraction": statistics.fmean(d.get("clipped_fraction", 0.0) for d in dp) if norms else None,
        "bytes_per_participant_round": report["bytes"]["payload_per_participant_per_round"],
        "seconds": seconds,
        "seconds_per_round": seconds / max(1, len(rounds)),
    }


def _worker_init() -> None:
    """One torch thread per worker: on a busy machine two-thread workers slow each other down ~10x."""
    import torch

    torch.set_num_threads(1)


def _cell_job(args: tuple[str, str, float, float | None, int, str, str]) -> dict[str, Any]:
    model, variant, eps, clip, seed, protocol, tmp = args
    cfg = cell_config(model, variant, eps, clip, seed, protocol)
    return run_cell(cfg, Path(tmp) / f"{variant}-{eps}")


def _eps_label(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:g}"


def markdown(results: dict[str, Any], variants: list[str], epsilons: list[float], title: str) -> str:
    head = "| variant | base model | " + " | ".join(f"clean ε={_eps_label(e)}" for e in epsilons)
    head += " | clip C | bytes / participant / round | vs lora | s / round (ε=∞) |"
    lines = [f"# Privacy, utility and traffic\n\n{title}\n", head, "|" + "---|" * (len(epsilons) + 6)]
    lora_bytes = next(
        (r["bytes_per_participant_round"] for k, r in results.items() if k.startswith("lora|")), None
    )
    for v in variants:
        cells = [results.get(f"{v}|{e}") for e in epsilons]
        accs = ["refused (no DP with flora)" if c is None else f"{100 * c['clean']:.1f}%" for c in cells]
        ref = results.get(f"{v}|{math.inf}") or {}
        clip, nbytes = ref.get("median_norm"), ref.get("bytes_per_participant_round")
        ratio = (
            f"1/{lora_bytes / nbytes:.0f}"
            if lora_bytes and nbytes and nbytes < lora_bytes / 2
            else (f"{nbytes / lora_bytes:.3f}" if lora_bytes and nbytes else "–")
        )
        clip_text = "–" if clip is None else f"{clip:.3g}"
        lines.append(
            f"| {v} | {100 * ref.get('base', math.nan):.1f}% | " + " | ".join(accs) + f" | {clip_text} | "
            f"{nbytes:,} | {ratio} | {ref.get('seconds_per_round', math.nan):.1f} |"
        )
    lines.append("")
    lines.append(
        "ε reached and noise multiplier z per cell: "
        + ", ".join(
            f"{k.replace('|', ' ε=')}: ε {r['epsilon']:.2f}, z {r['noise_multiplier']:.3f}"
            for k, r in results.items()
            if r.get("epsilon") is not None and r.get("noise_multiplier")
        )
    )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], variants: list[str], epsilons: list[float], path: Path) -> None:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    xs = list(range(len(epsilons)))
    for v in variants:
        ys = [results.get(f"{v}|{e}", {}).get("clean", math.nan) * 100 for e in epsilons]
        ax.plot(xs, ys, marker="o", label=v)
    ax.set_xticks(xs, [f"ε={_eps_label(e)}" for e in epsilons])
    ax.set_ylabel("clean accuracy (%)")
    ax.set_title("accuracy vs privacy")
    ax.legend()
    sizes = [results.get(f"{v}|{math.inf}", {}).get("bytes_per_participant_round", 0) for v in variants]
    bx.bar(variants, sizes)
    bx.set_yscale("log")
    bx.set_ylabel("bytes per participant per round")
    bx.set_title("traffic")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SETTINGS), default="smoke")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--epsilons", default=",".join(_eps_label(e).replace("∞", "inf") for e in EPSILONS))
    ap.add_argument("--protocol", choices=("fedavg", "chain"), default="fedavg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    try:
        epsilons = sorted({float(e) for e in args.epsilons.split(",") if e}, reverse=True)
    except ValueError:
        print(f"--epsilons: expected numbers or inf, got {args.epsilons!r}", file=sys.stderr)
        return 2
    bad = [v for v in variants if v not in VARIANTS] + [str(e) for e in epsilons if e <= 0]
    if bad:
        print(f"unknown variant or non-positive ε: {', '.join(bad)}", file=sys.stderr)
        return 2
    if math.inf not in epsilons:
        epsilons.insert(0, math.inf)  # the reference run fixes each variant's clip bound
    cells = [(v, e) for v in variants for e in epsilons if not (v == "flora" and not math.isinf(e))]
    results: dict[str, Any] = {}
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(*cols) as progress,
        cf.ProcessPoolExecutor(args.jobs, initializer=_worker_init) as pool,
    ):
        task = progress.add_task("privacy x variants", total=len(cells))

        def submit(v: str, e: float, clip: float | None) -> cf.Future:
            return pool.submit(_cell_job, (args.model, v, e, clip, args.seed, args.protocol, tmp))

        pending = {submit(v, math.inf, None): (v, math.inf) for v in variants}
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                v, e = pending.pop(fut)
                results[f"{v}|{e}"] = fut.result()
                progress.advance(task)
                if math.isinf(e) and v != "flora":
                    clip = results[f"{v}|{e}"]["median_norm"]
                    pending |= {submit(v, x, clip): (v, x) for x in epsilons if not math.isinf(x)}
    settings = SETTINGS[args.model]
    title = (
        f"Model `{args.model}` ({settings.get('model', {}).get('name', 'preset')}), "
        f"{settings.get('participants', 'preset')} participants, {settings.get('rounds', 'preset')} rounds, "
        f"protocol {args.protocol}, central DP (δ = {DELTA:g}, RDP, every committed update charged each "
        f"round), seed {args.seed}, {os.cpu_count()} CPU cores."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"privacy_utility_{args.model}"
    text = markdown(results, variants, epsilons, title)
    stem.with_suffix(".md").write_text(text + f"\n![privacy vs utility]({stem.name}.png)\n")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, variants, epsilons, stem.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
