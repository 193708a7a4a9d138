"""Record (or check) SHA-256 hashes of `compute_candidate` on seeded records, with and without DP.

Not a pytest module, for the reason tests/defense_bit_hashes.py gives (bit patterns depend on the
machine). Run it on ONE machine before and after a change to the round pipeline or the DP wrapper to
prove every candidate (vector, weights, flags, info) stayed bit-identical there:

    python tests/candidate_bit_hashes.py record /tmp/cand_before.json
    python tests/candidate_bit_hashes.py check /tmp/cand_before.json

Covers: every registered rule, samples and uniform weights, no DP, central and distributed DP (a clip
that cuts most updates), a replayed and an empty update that the screen drops, FLTrust's root, FoolsGold's
history, server_lr != 1, and a round where the screen drops everyone.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from defense_bit_hashes import record_or_check  # noqa: E402  (a script: tests/ is sys.path[0])

from consortium.defense import AGGREGATORS, DefenseParams, needs  # noqa: E402
from consortium.privacy import DpRule  # noqa: E402
from consortium.round.pipeline import AggregationRule, compute_candidate  # noqa: E402
from consortium.round.records import Commitment, put_vector  # noqa: E402
from consortium.store import BlobStore  # noqa: E402

LAYOUT = [("a.weight", (16, 24)), ("b.weight", (37,))]
DIM = 16 * 24 + 37
DPS = {
    "none": None,
    "central": DpRule("central", 0.8, 1.1, planned=9),
    "distributed": DpRule("distributed", 0.8, 1.1, planned=9),
}


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def records(store: BlobStore, n: int, seed: int, screened: bool) -> dict:
    g = torch.Generator().manual_seed(seed)
    last = torch.randn(DIM, generator=g) * 0.3
    commits = []
    for i in range(n):
        u = torch.randn(DIM, generator=g) * (1 + i % 3)
        if screened and i == 1:
            u = last * 2  # a replay of the last global step
        if screened and i == 2:
            u = torch.zeros(DIM)  # an empty update
        commits.append(Commitment(f"org{i:02d}", put_vector(store, u, LAYOUT), 10 + 7 * i))
    hist = {f"org{i:02d}": torch.randn(DIM, generator=g) for i in range(n)}
    return {
        "global_in": put_vector(store, torch.randn(DIM, generator=g), LAYOUT),
        "commitments": commits,
        "root": put_vector(store, torch.randn(DIM, generator=g) * 0.5, LAYOUT),
        "history": hist,
        "last_step": last if screened else None,
    }


def run(store: BlobStore, rec: dict, rule: AggregationRule, seed: int) -> dict:
    need = needs(rule.aggregator)
    try:
        c = compute_candidate(
            store,
            LAYOUT,
            rec["global_in"],
            rec["commitments"],
            rule,
            seed=seed,
            root=rec["root"] if need.root else None,
            history=rec["history"] if need.history else None,
            last_step=rec["last_step"],
        )
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    info = json.dumps(c.result.info, sort_keys=True, default=str)
    return {
        "vector": digest(c.vector),
        "weights": digest(c.result.weights),
        "flags": digest(c.result.flags.to(torch.uint8)),
        "clients": c.clients,
        "info": hashlib.sha256(info.encode()).hexdigest()[:16],
    }


def record() -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = BlobStore(Path(tmp) / "store")
        for n, seed, screened in ((9, 0, False), (9, 1, True), (5, 2, True), (3, 3, False)):
            rec = records(store, n, seed, screened)
            for name in sorted(AGGREGATORS):
                for weighting in ("samples", "uniform"):
                    for dp_name, dp in DPS.items():
                        for lr in (1.0, 1.7):
                            rule = AggregationRule(name, weighting, lr, DefenseParams(), "lora", dp)  # type: ignore[arg-type]
                            key = f"n{n}_s{seed}_scr{int(screened)}/{name}/{weighting}/{dp_name}/lr{lr}"
                            out[key] = run(store, rec, rule, 1000 + seed)
        # everyone screened: two empty updates, no rule runs
        g = torch.Generator().manual_seed(9)
        commits = [Commitment(f"o{i}", put_vector(store, torch.zeros(DIM), LAYOUT), 5) for i in range(2)]
        glob = put_vector(store, torch.randn(DIM, generator=g), LAYOUT)
        for dp_name, dp in DPS.items():
            rule = AggregationRule("fedavg", "samples", 1.0, DefenseParams(), "lora", dp)
            rec = {"global_in": glob, "commitments": commits, "root": None, "history": {}, "last_step": None}
            out[f"all_screened/{dp_name}"] = run(store, rec, rule, 7)
    return out


def main() -> None:
    record_or_check(record)


if __name__ == "__main__":
    main()
