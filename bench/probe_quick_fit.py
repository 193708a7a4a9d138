"""The final probe of `consortium probe train` without its leave-one-out transfer report.

Same samples (from the cache), features, classifier and seed as `consortium probe train`; it skips the
twelve refits of the leave-one-attack-out and leave-one-domain-out report, which on the SmolLM2 bench
preset (622k-value updates, an MLP) take longer than the fit itself. Writes `<out>/<sha256>.safetensors`
and `<out>/quick_fit_report.json` (held-out seeds' TPR / FPR / AUC, overall and per attack). The artifact's
`info` holds no transfer report, so its hash differs from the CLI's artifact of the same fit.

    python bench/probe_quick_fit.py --preset bench --cache DIR --out DIR \
        --set 'probe.train_seeds=[0,1,2,3,4,5,6]' --set 'probe.heldout_seeds=[7]' --set probe.train_rounds=4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from consortium.cli_probe import probe_config
from consortium.probe.artifact import save
from consortium.probe.dataset import load_clients
from consortium.probe.features import FeatureSpec
from consortium.probe.model import build
from consortium.probe.samples import collect_cached
from consortium.probe.trainer import features, metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--set", action="append", default=[], help="dotted override, as `probe train --set`")
    ap.add_argument("--cache", type=Path, required=True, help="the probe's sample cache")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cfg = probe_config(None, args.preset, args.set)
    pc = cfg.probe
    clients = load_clients(cfg)
    fit = [
        s
        for s in collect_cached(clients, pc.train_seeds, pc.level, args.cache)
        if s.attack not in pc.fit_exclude
    ]
    held = collect_cached(clients, pc.heldout_seeds, pc.level, args.cache)
    spec = FeatureSpec(pc.modules, True, pc.norm_stats, pc.sketch_dim, cfg.seed)
    x, y = features(fit, clients.layout, spec)
    probe = build(x, y, spec, clients.layout, pc.classifier, seed=cfg.seed)
    xo, yo = features(held, clients.layout, spec)
    scores = probe.score_features(torch.from_numpy(xo)).tolist()

    def on(rows: list[int]) -> dict:
        return metrics([int(yo[i]) for i in rows], [scores[i] for i in rows])

    report = {
        "heldout_seeds": on([i for i, s in enumerate(held) if s.attack not in pc.fit_exclude]),
        "per_attack": {
            a: on([i for i, s in enumerate(held) if s.attack in ("benign", a)])
            for a in sorted({s.attack for s in held} - {"benign"})
        },
        "not_fitted": sorted(pc.fit_exclude),
        "n_fit": len(fit),
        "n_heldout": len(held),
    }
    probe.info = {
        "model": cfg.model.name,
        "level": pc.level,
        "train_seeds": list(pc.train_seeds),
        "heldout_seeds": list(pc.heldout_seeds),
        "samples": {"fit": len(fit), "heldout": len(held)},
    }
    digest, _ = save(probe, args.out)
    (args.out / "quick_fit_report.json").write_text(json.dumps({"artifact": digest, **report}, indent=1))
    print(digest, json.dumps(report["heldout_seeds"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
