"""Record (or check) SHA-256 hashes of every rule's outputs on seeded, awkward inputs.

Not a pytest module: bit patterns depend on the machine (BLAS, SIMD width), so a test asserting them could
fail elsewhere. Run it on ONE machine before and after a change to the defence kernels to prove the
change kept every result bit-identical there (the audit recomputes aggregates and compares bits):

    python tests/defense_bit_hashes.py record /tmp/bits_before.json
    python tests/defense_bit_hashes.py check /tmp/bits_before.json

Covers: aggregate / weights / flags / info of every registered rule (the Gram rules at aggregation
versions 1 and 2, every rule but the coordinate-wise ones at version 3), float32, float64 and bfloat16,
odd and even n, ties, duplicate and zero rows, d not a multiple of the chunk (default and tiny
chunk_elems), the refusals (NaN, Inf, bad weights) by their messages, the screen and DP clipping.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from consortium.defense import AGGREGATORS, DefenseParams, aggregate  # noqa: E402
from consortium.defense.screen import screen  # noqa: E402
from consortium.privacy.mechanism import clip_updates  # noqa: E402


def digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16] + f"/{t.dtype}/{tuple(t.shape)}"


def inputs(n: int, d: int, seed: int, dtype: torch.dtype, kind: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u[: max(1, n // 5)] = u[: max(1, n // 5)] * 9 + 2  # outliers
    if kind == "ties":
        u = torch.round(u * 2) / 2  # many equal values per coordinate
        if n > 3:
            u[n - 1] = u[0]  # a duplicate client: equal Krum distances
    if kind == "zero":
        u[n // 2] = 0.0
    u = u.to(dtype)
    w = torch.rand(n, generator=g, dtype=torch.float64) * 90 + 10
    if kind == "zero_w":
        w[0] = 0.0
    root = (u[n // 5 :].double().mean(0) + 0.3 * torch.randn(d, generator=g, dtype=torch.float64)).to(dtype)
    hist = (u.double() * 2 + torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
    return u, w, root, hist


CASES = [
    # n, d, seed, dtype, kind, chunk_elems (None = default)
    (7, 1001, 0, torch.float32, "plain", None),
    (10, 1001, 1, torch.float32, "plain", 37),
    (13, 5003, 2, torch.float32, "plain", 997),
    (8, 777, 3, torch.float64, "plain", None),
    (11, 313, 4, torch.float64, "plain", 5),
    (10, 2001, 5, torch.float32, "ties", None),
    (9, 2001, 6, torch.float32, "ties", 41),
    (12, 999, 7, torch.float64, "ties", 100),
    (6, 501, 8, torch.float32, "zero", None),
    (15, 257, 9, torch.float32, "zero_w", 64),
    (7, 301, 10, torch.bfloat16, "plain", None),
    (4, 9, 11, torch.float64, "plain", 13),
    (3, 5, 12, torch.float32, "plain", None),
    (2, 4, 13, torch.float32, "plain", None),
    (1, 6, 14, torch.float32, "plain", None),
    (20, 3_400_001, 15, torch.float32, "plain", None),  # several default-size chunks, d not a multiple
    (9, 1_000_003, 16, torch.float32, "ties", 1_000_000),
]


GRAM_RULES = ("krum", "multi_krum", "bulyan", "flame", "foolsgold")


def run_rule(name: str, u, w, root, hist, p: DefenseParams, with_hist: bool) -> dict:
    try:
        r = aggregate(
            name,
            u,
            w,
            params=p,
            seed=123,
            root_update=root if name == "fltrust" else None,
            history=hist if with_hist else None,
        )
    except ValueError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {
        "aggregate": digest(r.aggregate),
        "weights": digest(r.weights),
        "flags": digest(r.flags),
        "info": hashlib.sha256(json.dumps(r.info, sort_keys=True).encode()).hexdigest()[:16],
    }


def refusals() -> dict:
    out = {}
    nan = torch.zeros(5, 1003)
    nan[3, 1002] = float("nan")
    inf = torch.zeros(5, 1003)
    inf[1, 0] = float("-inf")
    big = torch.full((4, 1003), 3e38)  # finite entries whose sum overflows: accepted
    big[1] = -1.0
    cases = {
        "nan_last_col": (nan, torch.ones(5), 7),
        "inf_first_col": (inf, torch.ones(5), None),
        "overflowing_sum": (big, torch.ones(4), 64),
        "neg_weight": (torch.ones(3, 4), torch.tensor([1.0, -1.0, 1.0]), None),
        "zero_weights": (torch.ones(3, 4), torch.zeros(3), None),
        "int_updates": (torch.ones(3, 4, dtype=torch.long), torch.ones(3), None),
        "bad_shape": (torch.ones(3, 4), torch.ones(4), None),
    }
    for key, (u, w, chunk) in cases.items():
        p = DefenseParams() if chunk is None else DefenseParams(chunk_elems=chunk)
        for name in AGGREGATORS:
            out[f"{key}/{name}"] = run_rule(name, u, w, torch.ones(u.shape[1]), None, p, False)
    h = torch.zeros(5, 1003)
    h[2, 500] = float("nan")
    out["history_nan"] = run_rule(
        "foolsgold", torch.ones(5, 1003), torch.ones(5), None, h, DefenseParams(), True
    )
    return out


def record() -> dict:
    out: dict = {}
    for n, d, seed, dtype, kind, chunk in CASES:
        u, w, root, hist = inputs(n, d, seed, dtype, kind)
        p = DefenseParams() if chunk is None else DefenseParams(chunk_elems=chunk)
        key = f"n{n}_d{d}_s{seed}_{str(dtype)[6:]}_{kind}_c{chunk}"
        rules = list(AGGREGATORS) if n * d < 10**7 else ["fedavg", "median", "krum", "norm_bound", "rlr"]
        for name in rules:
            out[f"{key}/{name}"] = run_rule(name, u, w, root, hist, p, False)
        out[f"{key}/foolsgold_hist"] = run_rule("foolsgold", u, w, root, hist, p, True)
        p2 = DefenseParams(chunk_elems=p.chunk_elems, aggregation_version=2)
        for name in [r for r in GRAM_RULES if r in rules]:  # aggregation version 2's Gram matrix
            out[f"{key}/{name}_v2"] = run_rule(name, u, w, root, hist, p2, False)
        p3 = DefenseParams(chunk_elems=p.chunk_elems, aggregation_version=3)
        for name in [r for r in rules if r not in ("median", "trimmed_mean")]:  # version 3's sums and norms
            out[f"{key}/{name}_v3"] = run_rule(name, u, w, root, hist, p3, False)
        out[f"{key}/foolsgold_hist_v3"] = run_rule("foolsgold", u, w, root, hist, p3, True)
        out[f"{key}/trimmed_mean_0.3"] = run_rule(
            "trimmed_mean", u, w, root, hist, DefenseParams(trim_ratio=0.3, chunk_elems=p.chunk_elems), False
        )
        out[f"{key}/multi_krum_f1_m2"] = run_rule(
            "multi_krum", u, w, root, hist, DefenseParams(f=min(1, n - 1), multi_krum_m=min(2, n)), False
        )
        last = u[0].clone() if n > 2 else None
        if last is not None:
            u2 = u.clone()
            u2[1] = last * 3  # a replay of the last global step
            for mn, cos in ((0.05, 0.99), (0.0, 2.0), (0.5, 0.5)):
                out[f"{key}/screen_{mn}_{cos}"] = json.dumps(screen(u2, last, mn, cos), sort_keys=True)
            out[f"{key}/screen_nolast"] = json.dumps(screen(u, None, 0.05, 0.99), sort_keys=True)
        if dtype != torch.bfloat16:
            for c in (0.5, 1e-3, 1e9):
                clipped, norms = clip_updates(u, c)
                out[f"{key}/clip_{c}"] = [digest(clipped), digest(norms)]
    out.update(refusals())
    return out


def main() -> None:
    record_or_check(record)


def record_or_check(record: Callable[[], dict[str, Any]]) -> None:
    """`record FILE` writes the hashes; `check FILE` prints each that differs and exits 1 if any does
    (shared with tests/candidate_bit_hashes.py)."""
    mode, path = sys.argv[1], Path(sys.argv[2])
    got = record()
    if mode == "record":
        path.write_text(json.dumps(got, indent=1, sort_keys=True))
        print(f"recorded {len(got)} hashes to {path}")
        return
    want = json.loads(path.read_text())
    bad = [k for k in sorted(want) if want[k] != got.get(k)]
    for k in bad:
        print(f"DIFF {k}\n  before {want[k]}\n  after  {got.get(k)}")
    new = len(set(got) - set(want))  # cases added since the record: nothing to compare them with
    extra = f", {new} not recorded" if new else ""
    print(f"{len(want)} recorded, {len(got)} now, {len(bad)} differ{extra}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
