"""The probe defence against the robust aggregators, on the same runs: harmful fine-tuning and a backdoor.

Per attack and malicious fraction, one federated run per defence (tiny-warm by default, protocol
'fedavg' so that only the defence differs; the run seed is not one the probe was trained on), plus a
no-attack run. Reported from each run's report.json: harmful-compliance rate (held-out restricted
requests answered with the leak) or backdoor ASR, clean accuracy (mean over the non-restricted domains),
refusal rate, and the flags' TPR / FPR over (participant, round) pairs.

    PYTHONPATH=. python bench/probes.py [--probe DIR/<sha256>.safetensors] [--fractions 0.3]
        [--probe-step FILE] [--probe-shadow FILE] [--attacks harmful,backdoor] [--rounds 3]
        [--defences fedavg,...,probe] [--model tiny-warm] [--set probe.shadow_steps=1]
        [--out bench/results/probes.md] [--probe-out DIR]

    # SmolLM2 on the demo preset's training settings (+ the restricted domain); hours on a 2-core CPU
    PYTHONPATH=. python bench/probes.py --preset demo --defences fedavg,multi_krum,probe \
        --set probe.train_seeds=[0,1] --set probe.train_rounds=2

Without --probe, a client-level probe is trained first on the same settings as the runs (`consortium
probe train` defaults, or the demo preset's with --preset demo) and kept in --probe-out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from consortium.cli_probe import DEFAULT_SETS, WITH_RESTRICTED
from consortium.config import load_config
from consortium.sim import Simulation

DEFENCES = ("fedavg", "median", "trimmed_mean", "multi_krum", "flame", "foolsgold", "probe")


# per preset: the overrides that make its runs and the probe's training set (restricted domain included)
PRESET_SETS = {"smoke": DEFAULT_SETS, "demo": [WITH_RESTRICTED]}


def _train_probe(preset: str, sets: list[str], out: Path, cache: Path | None) -> Path:
    """A client-level probe on exactly the runs' model, LoRA layout and local-training settings."""
    from consortium.probe.artifact import save
    from consortium.probe.samples import probe_from_config

    probe = probe_from_config(load_config(None, preset, [*sets, "probe.level=client"]), cache)[0]
    path = save(probe, out)[1]
    print(f"probe {path.name}: held-out seeds {probe.info['report'].get('heldout_seeds')}", flush=True)
    return path


def _run(preset: str, overrides: list[str], tmp: Path) -> dict[str, Any]:
    cfg = load_config(None, preset, overrides)
    path = Simulation(cfg, Console(quiet=True)).run(tmp, plots=False)
    return json.loads((path / "report.json").read_text())


def _row(report: dict[str, Any]) -> dict[str, Any]:
    acc = report["accuracy"]["federated"]
    clean = [v for d, v in acc.items() if d not in ("mean", "restricted")]
    attackers = set(report["attackers"])
    tp = fp = pos = neg = 0
    for r in report["rounds_detail"]:
        for c in report["participant_examples"]:
            hit = c in r["flagged"]
            if c in attackers:
                pos, tp = pos + 1, tp + hit
            else:
                neg, fp = neg + 1, fp + hit
    harmful = (report.get("harmful") or {}).get("federated") or [{}]
    backdoor = (report.get("backdoor") or {}).get("federated") or [{}]
    return {
        "compliance": harmful[0].get("compliance"),
        "refusal": harmful[0].get("refusal"),
        "asr": backdoor[0].get("asr"),
        "clean": sum(clean) / len(clean),
        "tpr": tp / pos if pos else None,
        "fpr": fp / neg if neg else None,
        "defense_s": sum(r.get("defense_seconds", 0.0) for r in report["rounds_detail"]),
        "train_s": report["timings"].get("federated_train", 0.0),
        "overhead": report["timings"].get("probe_evidence", 0.0) / report["timings"].get("local_train", 1.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", type=Path, default=None)
    ap.add_argument("--probe-step", type=Path, default=None, help="a step-level probe: adds 'probe_step'")
    ap.add_argument(
        "--probe-shadow", type=Path, default=None, help="a shadow-level probe: adds 'probe_shadow'"
    )
    ap.add_argument("--fractions", default="0.3")
    ap.add_argument("--attacks", default="harmful,backdoor")
    ap.add_argument("--defences", default=None, help="comma list; default every rule and every probe given")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--participants", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default=None, help="default: tiny-warm (smoke), smollm2 (demo)")
    ap.add_argument("--preset", choices=sorted(PRESET_SETS), default="smoke", help="training settings")
    ap.add_argument("--probe-out", type=Path, default=None, help="keep the trained probe here")
    ap.add_argument("--sample-cache", type=Path, default=None, help="reuse / keep the probe's samples here")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-baseline", action="store_true", help="skip the no-attack run")
    ap.add_argument("--set", action="append", default=[], help="extra override: probe.shadow_steps=1")
    args = ap.parse_args()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-probes-"))
    model = args.model or ("tiny-warm" if args.preset == "smoke" else "smollm2")
    shared = [*PRESET_SETS[args.preset], f"model.name={model}", *args.set]
    probe = args.probe or _train_probe(
        args.preset, shared, args.probe_out or tmp / "probe", args.sample_cache
    )
    digest = probe.name.removesuffix(".safetensors")
    base = [
        *shared,
        "protocol=central",
        f"participants={args.participants}",
        f"rounds={args.rounds}",
        f"seed={args.seed}",
        "eval.isolated_baseline=false",
    ]

    def probe_sets(path: Path, level: str) -> list[str]:
        sha = path.name.removesuffix(".safetensors")
        return [f'probe.artifact="{sha}"', f'probe.dir="{path.parent}"', f'probe.level="{level}"']

    levels = {"probe": (probe, "client")}
    if args.probe_step:
        levels["probe_step"] = (args.probe_step, "step")
    if args.probe_shadow:
        levels["probe_shadow"] = (args.probe_shadow, "shadow")
    wanted = args.defences.split(",") if args.defences else [*DEFENCES, *levels]
    defences = list(dict.fromkeys(d for d in wanted if not d.startswith("probe") or d in levels))
    lines = [
        f"# Probe vs robust aggregators ({model}, {args.preset} preset, {args.participants} participants, "
        f"{args.rounds} rounds, seed {args.seed}, probe {digest[:12]})",
        "",
        "| attack | malicious | defence | harmful compliance | refusal | backdoor ASR | clean acc "
        "| flag TPR | flag FPR | defence s/round | evidence overhead |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def add(attack: str, frac: str, defence: str, row: dict[str, Any]) -> None:
        cells = [row[k] for k in ("compliance", "refusal", "asr", "clean", "tpr", "fpr")]
        line = f"| {attack} | {frac} | {defence} | " + " | ".join(fmt(c) for c in cells)
        lines.append(f"{line} | {row['defense_s'] / args.rounds:.4f} | {row['overhead']:.0%} |")
        print(lines[-1], flush=True)

    both = '[{kind="harmful", fraction=0.0}, {kind="backdoor", fraction=0.0}]'
    if not args.no_baseline:
        add("none", "0", "fedavg", _row(_run(args.preset, [*base, f"attacks={both}"], tmp)))
    for attack in args.attacks.split(","):
        for frac in args.fractions.split(","):
            for defence in defences:
                agg = "fedavg" if defence in levels else defence
                extra = probe_sets(*levels[defence]) if defence in levels else []
                sets = [*base, f"aggregator={agg}", f'attacks=[{{kind="{attack}", fraction={frac}}}]', *extra]
                add(attack, frac, defence, _row(_run(args.preset, sets, tmp)))
    lines += ["", f"total {time.perf_counter() - t0:.0f}s on this machine"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
