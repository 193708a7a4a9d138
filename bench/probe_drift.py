"""Does the shadow level keep the probe accurate in late rounds? (Safe-FedLLM's drift claim.)

One labelled set at the shadow level (tiny-warm by default): for every simulated client and round it
holds both the submitted update (what the client level scores) and the shadow delta (same data, trained
from the fixed initial adapter at a fixed lr). A probe per view is fitted on round 0 of the fitting seeds
only, then tested round by round on held-out seeds: if the client-level features drift as the global
model moves, its accuracy falls with the round while the shadow probe's should not. 'gap' is the mean
score of malicious minus benign samples, a margin that keeps moving after AUC saturates at 1. Only
attacks that train have shadow deltas, so noise and free riders are left out here.

    PYTHONPATH=. python bench/probe_drift.py [--rounds 4] [--model tiny-warm] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from consortium.attacks import (
    AdaptiveBackdoorAttack,
    BackdoorAttack,
    HarmfulAttack,
    LabelFlipAttack,
    ScaleAttack,
    SybilAttack,
)
from consortium.cli_probe import DEFAULT_SETS
from consortium.config import load_config
from consortium.probe.dataset import Sample, collect, load_clients
from consortium.probe.features import FeatureSpec
from consortium.probe.model import build
from consortium.probe.trainer import features, metrics

ATTACKS = (
    BackdoorAttack(),
    AdaptiveBackdoorAttack(),
    ScaleAttack(factor=5.0),
    LabelFlipAttack(),
    SybilAttack(),
    HarmfulAttack(),
)


def _view(samples: list[Sample], which: str) -> list[Sample]:
    if which == "shadow":
        return samples
    return [Sample(s.update, s.label, s.attack, s.domain, s.seed, s.round) for s in samples]  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--model", default="tiny-warm")
    ap.add_argument("--fit-seeds", default="0,1")
    ap.add_argument("--test-seeds", default="2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_config(None, "smoke", [*DEFAULT_SETS, f"model.name={args.model}"])
    t0 = time.perf_counter()
    clients = load_clients(cfg)
    fit_seeds = [int(s) for s in args.fit_seeds.split(",")]
    test_seeds = [int(s) for s in args.test_seeds.split(",")]
    fit = collect(clients, fit_seeds, "shadow", ATTACKS, rounds=1)
    test = collect(clients, test_seeds, "shadow", ATTACKS, rounds=args.rounds)
    spec = FeatureSpec()
    rows = []
    probes = {}
    for which in ("client", "shadow"):
        x, y = features(_view(fit, which), clients.layout, spec)
        probes[which] = build(x, y, spec, clients.layout)
    for r in range(args.rounds):
        cells = []
        for which in ("client", "shadow"):
            part = [s for s in _view(test, which) if s.round == r]
            x, y = features(part, clients.layout, spec)
            scores = probes[which].score_features(torch.from_numpy(x))
            m = metrics(y.tolist(), scores.tolist())
            yt = torch.from_numpy(y).bool()
            m["gap"] = float(scores[yt].mean() - scores[~yt].mean())  # a margin that does not saturate
            cells.append(m)
        rows.append((r, cells))
    lines = [
        f"# Probe drift: client level vs shadow level ({args.model}, fitted on round 0 of seeds {fit_seeds}, "
        f"tested on seeds {test_seeds})",
        "",
        "| round | client AUC | client TPR | client FPR | client gap | shadow AUC | shadow TPR | shadow FPR "
        "| shadow gap |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def f(m: dict) -> str:
        return " | ".join("-" if m[k] is None else f"{m[k]:.3f}" for k in ("auc", "tpr", "fpr", "gap"))

    lines += [f"| {r} | {f(c)} | {f(s)} |" for r, (c, s) in rows]
    first = {(s.seed, s.domain): s for s in test if s.round == 0 and s.label == 0}
    drift = []
    for r in range(args.rounds):
        cos = [
            float(torch.nn.functional.cosine_similarity(s.update, first[(s.seed, s.domain)].update, dim=0))  # type: ignore[arg-type]
            for s in test
            if s.round == r and s.label == 0
        ]
        drift.append(sum(cos) / len(cos))
    lines += [
        "",
        "cosine of a benign client's update with its own round-0 update, per round: "
        + ", ".join(f"{d:.3f}" for d in drift),
        f"{len(fit)} fitting + {len(test)} test samples, {time.perf_counter() - t0:.0f}s on this machine",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
