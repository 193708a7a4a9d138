"""Aggregation version 3 (float32 weighted sums and norms over fixed chunks, version 2's Gram matrix): close
to version 1, the same selections on separated inputs, no overflow where version 1 had none, bad updates
refused by name, and the default of every preset (new runs) while a config without the key stays 1.
"""

from __future__ import annotations

import pytest
import torch

import consortium.defense.gram_v2 as gram_v2_module
from consortium.config import PRESETS, config_digest, load_config, to_toml_dict
from consortium.defense import DefenseParams, UpdateError, aggregate
from consortium.defense.kernels import row_norms, weighted_sum

RULES = ("fedavg", "norm_bound", "rlr", "fltrust", "foolsgold", "multi_krum", "flame", "krum", "bulyan")
V1, V3 = DefenseParams(aggregation_version=1), DefenseParams(aggregation_version=3)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several chunks (and a short last one) on small inputs."""
    monkeypatch.setattr(gram_v2_module, "WIDTH_ELEMS", 400)
    monkeypatch.setattr(gram_v2_module, "MIN_WIDTH", 16)
    monkeypatch.setattr(gram_v2_module, "WINDOW", 3)


def _updates(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[: max(1, n // 5)] = x[: max(1, n // 5)] * 8 + 3  # outliers far from the others
    w = torch.linspace(10, 100, n, dtype=torch.float64)
    root = x[n // 5 :].mean(0) + 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    return x.float(), w, root.float()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(("n", "d"), [(7, 500), (15, 2001), (23, 777)])
def test_v3_selects_what_v1_selects_and_is_close(small_chunks: None, rule: str, n: int, d: int) -> None:
    x, w, root = _updates(n, d, n)
    r1 = aggregate(rule, x, w, params=V1, seed=5, root_update=root)
    r3 = aggregate(rule, x, w, params=V3, seed=5, root_update=root)
    assert torch.equal(r1.flags, r3.flags)
    assert float((r1.weights - r3.weights).abs().max()) <= 1e-5
    scale = float(x.double().abs().max())
    assert float((r1.aggregate.double() - r3.aggregate.double()).abs().max()) <= 1e-5 * scale


def test_v3_weighted_sum_is_float32_products_and_ignores_chunk_elems(small_chunks: None) -> None:
    x, w, _ = _updates(9, 1001, 1)
    coef = w / w.sum()
    got = [weighted_sum(x, coef, c, version=3) for c in (1 << 26, 100, 7)]
    assert all(torch.equal(g, got[0]) for g in got[1:])
    exact = coef @ x.double()
    assert float((got[0].double() - exact).abs().max()) <= 1e-5 * float(x.abs().max())
    assert not torch.equal(got[0], weighted_sum(x, coef, 1 << 26))  # not version 1's float64 sum


def test_v3_weighted_sum_does_not_overflow_where_float64_does_not(small_chunks: None) -> None:
    """3e38 + 3e38 overflows float32 while the weighted sum (3e38 + 3e38 - 3e38) / 3 does not."""
    x = torch.zeros(3, 40)
    x[:, 5] = torch.tensor([3e38, 3e38, -3e38])
    ones = torch.ones(3, dtype=torch.float64)
    r = aggregate("fedavg", x, ones, params=V3)
    assert bool(torch.isfinite(r.aggregate).all())
    assert float(r.aggregate[5]) == pytest.approx(1e38, rel=1e-6)
    coef = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)  # 3e38 + 3e38 - 3e38
    assert float(weighted_sum(x, coef, 1 << 26, version=3)[5]) == pytest.approx(3e38, rel=1e-6)


def test_v3_norms_do_not_overflow_where_float64_does_not(small_chunks: None) -> None:
    x = torch.ones(4, 100)
    x[2, 7] = 1e20  # its square is above float32's range
    norms = row_norms(x, 1 << 26, version=3)
    assert bool(torch.isfinite(norms).all())
    assert float(norms[2]) == pytest.approx(1e20, rel=1e-6)
    assert torch.equal(norms[[0, 1, 3]], torch.full((3,), 10.0, dtype=torch.float64))
    r = aggregate("norm_bound", x, torch.ones(4), params=V3)
    assert r.info["clip_factors"][2] < 1e-18 and bool(torch.isfinite(r.aggregate).all())


@pytest.mark.parametrize("rule", ["fedavg", "norm_bound", "rlr", "fltrust", "foolsgold", "multi_krum"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_v3_refuses_a_non_finite_update_by_name(small_chunks: None, rule: str, bad: float) -> None:
    x, w, root = _updates(9, 300, 3)
    x[4, 217] = bad
    with pytest.raises(UpdateError, match="client 4"):
        aggregate(rule, x, w, params=V3, root_update=root)


def test_every_preset_makes_new_runs_at_version_3_and_a_config_without_the_key_stays_1() -> None:
    for preset in PRESETS:
        assert load_config(preset=preset).defense.aggregation_version == 3
    v1 = load_config(preset="smoke", overrides=["defense.aggregation_version=1"])
    older = to_toml_dict(v1)
    older["defense"].pop("aggregation_version")  # a run directory written before versions existed
    assert DefenseParams(**older["defense"]).aggregation_version == 1
    assert config_digest(v1) != config_digest(load_config(preset="smoke"))
