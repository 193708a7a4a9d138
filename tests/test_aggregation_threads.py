"""An aggregate must not depend on how many threads its machine gives torch: an auditor on a machine with
another core count recomputes it bit for bit. Versions 2 and 3 promise that; version 1 does not (its
multi-threaded float64 Gram product splits its sums by thread count, so Krum and Multi-Krum can pick
differently): its case is an expected failure, kept to show that the test can fail. FLTrust's float64 dot
products and squared norms split by thread count too at versions 1 and 2; version 3 computes them as
its other sums.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import consortium.defense.gram_v2 as gram_v2_module
from consortium.defense import DefenseParams, aggregate

GRAM_RULES = ("krum", "multi_krum", "bulyan", "flame", "foolsgold")
SUM_RULES = ("fedavg", "norm_bound", "rlr", "fltrust")
CASES = [(10, 1001, 1, 37), (13, 5003, 2, 997), (12, 3001, 3, 1 << 26), (20, 20011, 4, 1 << 26)]
"""n, d, seed, chunk_elems: version 1's Gram matrix differs between 1 and 2 threads on the last two on the
machine this was written on (FoolsGold's alphas, FLAME's clip bound follow it)."""


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions 2 and 3 take several chunks and windows on these small inputs, so the pool is used."""
    monkeypatch.setattr(gram_v2_module, "WIDTH_ELEMS", 512)
    monkeypatch.setattr(gram_v2_module, "MIN_WIDTH", 16)
    monkeypatch.setattr(gram_v2_module, "WINDOW", 3)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _updates(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.rand(
        n, 1, generator=g, dtype=torch.float64
    )
    x[: n // 5] = x[: n // 5] * 6 + 1  # outliers
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    root = torch.randn(d, generator=g, dtype=torch.float64)
    return x.float(), w, root.float()


def _outputs(rule: str, version: int, threads: int) -> list[torch.Tensor | str]:
    """Aggregate, weights, flags and info (the scores, alphas, clip factors a report shows) of every case."""
    torch.set_num_threads(threads)
    got: list[torch.Tensor | str] = []
    for n, d, seed, chunk in CASES:
        x, w, root = _updates(n, d, seed)
        params = DefenseParams(aggregation_version=version, chunk_elems=chunk, flame_noise=0.001)
        r = aggregate(rule, x, w, params=params, seed=seed, root_update=root)
        got += [r.aggregate, r.weights, r.flags, repr(r.info)]
    return got


def _same(a: torch.Tensor | str, b: torch.Tensor | str) -> bool:
    return a == b if isinstance(a, str) else torch.equal(a, b)  # type: ignore[arg-type]


def _versions() -> list:
    v1 = pytest.param(
        1,
        marks=pytest.mark.xfail(
            reason="version 1's float64 Gram product splits by thread count", strict=False
        ),
    )
    return [v1, 2, 3]


@pytest.mark.parametrize("version", _versions())
def test_the_gram_rules_give_the_same_bits_on_one_and_two_threads(
    small_chunks: None, restore_threads: None, version: int
) -> None:
    for rule in GRAM_RULES:
        one, two = _outputs(rule, version, 1), _outputs(rule, version, 2)
        assert all(_same(a, b) for a, b in zip(one, two, strict=True)), rule


@pytest.mark.parametrize("version", [3])
def test_the_weighted_sum_rules_give_the_same_bits_on_one_and_two_threads(
    small_chunks: None, restore_threads: None, version: int
) -> None:
    for rule in SUM_RULES:
        one, two = _outputs(rule, version, 1), _outputs(rule, version, 2)
        assert all(_same(a, b) for a, b in zip(one, two, strict=True)), rule
