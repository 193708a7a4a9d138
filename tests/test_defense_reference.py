"""The torch rules against an independent, deliberately naive reference: numpy and plain Python loops over
clients and coordinates, distances computed directly (no Gram matrix), straight from the papers'
definitions. float64 inputs; agreement to 1e-9."""

import numpy as np
import pytest
import torch

from consortium.defense import DefenseParams, aggregate

# --- reference implementations ---------------------------------------------------------------------------


def ref_median(x: np.ndarray) -> np.ndarray:
    return np.median(x, axis=0)


def ref_trimmed_mean(x: np.ndarray, k: int) -> np.ndarray:
    n, d = x.shape
    out = np.empty(d)
    for j in range(d):
        col = sorted(x[:, j])
        kept = col[k : n - k]
        out[j] = sum(kept) / len(kept)
    return out


def ref_krum_scores(x: np.ndarray, idx: list[int], f: int) -> dict[int, float]:
    r = len(idx)
    k = min(max(1, r - f - 2), r - 1)
    scores = {}
    for i in idx:
        dists = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in idx if j != i)
        scores[i] = sum(dists[:k])
    return scores


def ref_krum(x: np.ndarray, f: int) -> np.ndarray:
    s = ref_krum_scores(x, list(range(len(x))), f)
    best = min(s, key=lambda i: (s[i], i))
    return x[best]


def ref_multi_krum(x: np.ndarray, w: np.ndarray, f: int, m: int) -> np.ndarray:
    s = ref_krum_scores(x, list(range(len(x))), f)
    keep = sorted(s, key=lambda i: (s[i], i))[:m]
    total = sum(w[i] for i in keep)
    return sum(w[i] * x[i] for i in keep) / total


def ref_bulyan(x: np.ndarray, f: int) -> np.ndarray:
    n, d = x.shape
    theta, beta = n - 2 * f, n - 4 * f
    remaining, selected = list(range(n)), []
    while len(selected) < theta:
        s = ref_krum_scores(x, remaining, f)
        best = min(s, key=lambda i: (s[i], i))
        selected.append(best)
        remaining.remove(best)
    out = np.empty(d)
    for j in range(d):
        vals = sorted(x[i, j] for i in selected)
        med = float(np.median(vals))
        closest = sorted(vals, key=lambda v: abs(v - med))[:beta]  # stable: ties -> smaller value
        out[j] = sum(closest) / beta
    return out


# --- comparisons -----------------------------------------------------------------------------------------

CASES = [(3, 5), (4, 9), (7, 13), (10, 6), (11, 20), (15, 9), (20, 4)]


def _inputs(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    bad = rng.choice(n, size=n // 5, replace=False)
    x[bad] = x[bad] * rng.uniform(2, 30) + rng.normal(size=d) * 5  # a few outliers
    return x, rng.uniform(1, 100, size=n)


def _agg(name: str, x: np.ndarray, w: np.ndarray, **params) -> np.ndarray:
    # tiny chunks, so that the chunked code paths are what is compared
    p = DefenseParams(chunk_elems=3 * x.shape[0] + 1, **params)
    r = aggregate(name, torch.from_numpy(x), torch.from_numpy(w), params=p)
    return r.aggregate.numpy()


@pytest.mark.parametrize(("n", "d"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_median_and_trimmed_mean(n: int, d: int, seed: int) -> None:
    x, w = _inputs(n, d, seed)
    np.testing.assert_allclose(_agg("median", x, w), ref_median(x), rtol=0, atol=1e-9)
    for ratio in (0.0, 0.1, 0.25, 0.4):
        k = int(np.floor(ratio * n + 1e-9))
        got = _agg("trimmed_mean", x, w, trim_ratio=ratio)
        np.testing.assert_allclose(got, ref_trimmed_mean(x, k), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("n", "d"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("version", [1, 2])
def test_krum_and_multi_krum(n: int, d: int, seed: int, version: int) -> None:
    x, w = _inputs(n, d, seed)
    v = {"aggregation_version": version}
    for f in sorted({0, 1, (n - 3) // 2, n - 1}):
        if f < 0:
            continue
        np.testing.assert_allclose(_agg("krum", x, w, f=f, **v), ref_krum(x, f), rtol=0, atol=1e-9)
        for m in sorted({1, max(1, n - f), max(1, n // 2)}):
            got = _agg("multi_krum", x, w, f=f, multi_krum_m=m, **v)
            np.testing.assert_allclose(got, ref_multi_krum(x, w, f, m), rtol=0, atol=1e-9)
    # defaults: f = (n - 3) // 2, m = n - f
    f = max(0, (n - 3) // 2)
    np.testing.assert_allclose(_agg("krum", x, w, **v), ref_krum(x, f), rtol=0, atol=1e-9)
    got = _agg("multi_krum", x, w, **v)
    np.testing.assert_allclose(got, ref_multi_krum(x, w, f, n - f), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("n", "d"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("version", [1, 2])
def test_bulyan(n: int, d: int, seed: int, version: int) -> None:
    x, w = _inputs(n, d, seed)
    v = {"aggregation_version": version}
    for f in range((n - 3) // 4 + 1):
        np.testing.assert_allclose(_agg("bulyan", x, w, f=f, **v), ref_bulyan(x, f), rtol=0, atol=1e-9)
    np.testing.assert_allclose(_agg("bulyan", x, w, **v), ref_bulyan(x, (n - 3) // 4), rtol=0, atol=1e-9)


def test_reference_is_not_vacuous() -> None:
    """The robust rules really differ from the mean on these inputs (so agreement means something)."""
    x, w = _inputs(11, 20, 0)
    mean = x.mean(0)
    for name in ("median", "trimmed_mean", "krum", "multi_krum", "bulyan"):
        assert np.abs(_agg(name, x, w) - mean).max() > 0.1, name


@pytest.mark.parametrize(("n", "d"), [(7, 40), (11, 40), (15, 30)])
def test_many_ties(n: int, d: int) -> None:
    """Small integers: equal values, equal distances, equal Krum scores everywhere. The tie rules
    (lowest client index for Krum, smaller value for Bulyan's closest-to-median) match the reference."""
    rng = np.random.default_rng(n)
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float64)
    w = np.ones(n)
    np.testing.assert_array_equal(_agg("median", x, w), ref_median(x))
    np.testing.assert_allclose(
        _agg("trimmed_mean", x, w, trim_ratio=0.2), ref_trimmed_mean(x, int(0.2 * n)), atol=1e-12
    )
    for f in range((n - 3) // 4 + 1):
        np.testing.assert_allclose(_agg("bulyan", x, w, f=f), ref_bulyan(x, f), rtol=0, atol=1e-12)
    for f in (0, 1, (n - 3) // 2):
        np.testing.assert_array_equal(_agg("krum", x, w, f=f), ref_krum(x, f))
        np.testing.assert_allclose(_agg("multi_krum", x, w, f=f), ref_multi_krum(x, w, f, n - f), atol=1e-12)
