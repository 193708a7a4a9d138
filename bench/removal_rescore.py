"""Rescore the removal benchmark's backdoor results on more test questions: is recover within 2 points?

`bench/removal.py` scores each adapter on the run's 100 test questions (20 a domain), so one question is
one point of the clean score, and the paired gap between recover and the reference (retrain) moves by
a few points from question sampling alone. This scores the adapters that `bench/removal.py` left in its
`--work` folders (the reference and every recover schedule run on the same original run) on fresh
questions: `--per-domain` a domain drawn from the built-in generators with another corpus seed
(`run seed + 10007`), minus any prompt of the run's own corpus (train or test), every adapter on the
same questions, so the gaps are paired per question. Trains nothing.

    python bench/removal_rescore.py --work DIR0 DIR1 ... --seeds 0 1 ... --per-domain 100

`--work` and `--seeds` pair up: the folder `bench/removal.py --seeds S --work DIR` wrote (it holds
`backdoor-S/`). Writes `--out`/rescore-seeds*.json (per adapter: accuracy per domain and each verdict)
and `--out`/rescore.md (per seed, and the paired gap to the reference: mean and 95% Student-t interval
over seeds).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).parent))  # removal.py and robustness.py beside this file
from removal import config
from robustness import interval

from consortium.data import Example
from consortium.data.corpus import build_corpus
from consortium.evaluate import accuracy_by_domain
from consortium.model import set_flat
from consortium.round.records import get_vector
from consortium.sim import Simulation
from consortium.store import BlobStore

OUT = Path(__file__).parent / "results" / "removal_rescore"
CORPUS_OFFSET = 10007  # the fresh questions' corpus seed is the run's seed plus this


class RescoreError(ValueError):
    """A --work folder that does not hold what bench/removal.py leaves: one line, exit 2."""


def fresh_questions(cfg: Any, per_domain: int) -> list[Example]:
    """The test split of another corpus seed (`per_domain` a domain beside the run's train size: policy
    asks only facts its train split holds, and the run's train split covers nearly all 60), less any
    prompt of the run's own corpus: fewer than `per_domain` where a domain's space is small."""
    domains = list(cfg.data.domains)
    ran = build_corpus(domains, cfg.data.n_train, cfg.data.n_test, cfg.seed)
    seen = {e.prompt for e in ran.train + ran.test}
    fresh = build_corpus(domains, cfg.data.n_train, per_domain, cfg.seed + CORPUS_OFFSET).test
    return [e for e in fresh if e.prompt not in seen]


def adapters(case: Path) -> dict[str, tuple[Path, str]]:
    """name -> (store folder, adapter hash): the reference and each recover schedule of one case."""
    out: dict[str, tuple[Path, str]] = {}
    for method in ("retrain", "recover"):
        for rec_path in sorted((case / method).glob("*/removal.json")):
            rec = json.loads(rec_path.read_text())["removal"]
            name = method
            if method == "recover":
                name = f"recover K={rec['exact_rounds']} T={rec['correct_every'] or 'off'}"
                if rec.get("warmup_rounds"):
                    name += f" W={rec['warmup_rounds']}"
                if rec.get("estimate", "recorded") != "recorded":
                    name += f" {rec['estimate']}"
            if name in out:
                raise RescoreError(f"{case / method}: two results of {name}; keep one")
            out[name] = (rec_path.parent / "store", rec["global_adapter"])
    if "retrain" not in out:
        raise RescoreError(f"{case}: no reference (retrain/*/removal.json)")
    return out


def rescore(
    seed: int, found: dict[str, tuple[Path, str]], per_domain: int, rounds: int, sets: list[str]
) -> dict[str, Any]:
    """Every adapter of one seed's case (`adapters`) on the same fresh questions: accuracy and verdicts."""
    cfg = config("backdoor", seed, rounds, "bench", sets)
    sim = Simulation(cfg, console=Console(file=io.StringIO()))
    questions = fresh_questions(sim.cfg, per_domain)
    out: dict[str, Any] = {"seed": seed, "questions": len(questions), "adapters": {}}
    with Progress() as progress:
        for name, (store, digest) in found.items():
            set_flat(sim.model, sim.spec, get_vector(BlobStore(store), digest, sim.layout))
            verdicts = sim.metrics.verdicts(questions, f"seed {seed} {name}", progress)
            acc = accuracy_by_domain(questions, verdicts)
            bits = "".join("01"[v] for v in verdicts)
            out["adapters"][name] = {"adapter": digest, "accuracy": acc, "verdicts": bits}
    return out


def summary(results: list[dict[str, Any]], command: str, out: Path) -> str:
    names = sorted({n for r in results for n in r["adapters"]} - {"retrain"})
    seeds = [r["seed"] for r in results]
    lines = [
        "# Removal rescored on fresh questions (bench/removal_rescore.py)",
        "",
        f"Command: `{command}`; results: `{out}/rescore-seeds*.json`; seeds {seeds}; questions per seed "
        f"{[r['questions'] for r in results]} (fresh, none in the run's corpus). Clean exact match %, mean "
        "over domains; gap = reference − method, paired on the same questions; mean ± half-width of the 95% "
        "Student-t interval over seeds.",
        "",
        "| adapter | clean % per seed | gap to the reference per seed (points) | gap, mean ± 95% |",
        "|---|---|---|---|",
    ]
    ref = [100 * r["adapters"]["retrain"]["accuracy"]["mean"] for r in results]
    lines.append(f"| retrain (reference) | {', '.join(f'{v:.1f}' for v in ref)} | – | – |")
    for name in names:
        have = [r for r in results if name in r["adapters"]]
        acc = [100 * r["adapters"][name]["accuracy"]["mean"] for r in have]
        gaps = [
            100 * (r["adapters"]["retrain"]["accuracy"]["mean"] - r["adapters"][name]["accuracy"]["mean"])
            for r in have
        ]
        mean, _, half = interval(gaps)
        if len(have) < len(results):
            name += f" (seeds {', '.join(str(r['seed']) for r in have)})"
        lines.append(
            f"| {name} | {', '.join(f'{v:.1f}' for v in acc)} | {', '.join(f'{g:+.1f}' for g in gaps)} | "
            f"{mean:.1f} ± {half:.1f} (n={len(gaps)}) |"
        )
    per_domain = [
        f"seed {r['seed']}: "
        + ", ".join(f"{d} {100 * v:.0f}" for d, v in r["adapters"]["retrain"]["accuracy"].items())
        for r in results
    ]
    lines += ["", "The reference per domain (%): " + "; ".join(per_domain) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, nargs="+", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--per-domain", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], help="config override a.b=value, as the run's")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if len(args.work) != len(args.seeds):
        print(f"error: {len(args.work)} --work folders for {len(args.seeds)} --seeds", file=sys.stderr)
        return 2
    try:  # every folder before any model loads or anything is written: a wrong one fails fast
        pairs = zip(args.seeds, args.work, strict=True)
        cases = [adapters(work / f"backdoor-{seed}") for seed, work in pairs]
    except RescoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python bench/removal_rescore.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for seed, found in zip(args.seeds, cases, strict=True):
        res = rescore(seed, found, args.per_domain, args.rounds, args.set)
        (args.out / f"rescore-seeds{seed}.json").write_text(json.dumps(res, indent=1) + "\n")
    results = sorted(
        (json.loads(f.read_text()) for f in args.out.glob("rescore-seeds*.json")), key=lambda r: r["seed"]
    )
    (args.out / "rescore.md").write_text(summary(results, command, args.out))
    print((args.out / "rescore.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
