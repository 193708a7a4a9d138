"""Aggregation version 2 (the float32-product Gram matrix): what it keeps from version 1 and what it adds.

Version 1 stays the meaning of a config without the key (old runs audit as before); version 2's Gram
matrix is close to version 1's, picks the same clients on separated inputs, and its bits depend neither
on the thread count nor on `chunk_elems`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
import torch

import consortium.defense.gram_v2 as gram_v2_module
from consortium.config import ConfigError, RunConfig, config_digest, load_config, to_toml_dict
from consortium.defense import DefenseParams, UpdateError, aggregate
from consortium.defense.gram_v2 import chunk_width
from consortium.defense.kernels import gram
from consortium.round.pipeline import rule_from_config
from consortium.rundir import load_run_config

GRAM_RULES = ("krum", "multi_krum", "bulyan", "flame", "foolsgold")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Narrow chunks and a short window, so that small inputs take several chunks and windows."""
    monkeypatch.setattr(gram_v2_module, "WIDTH_ELEMS", 64)
    monkeypatch.setattr(gram_v2_module, "MIN_WIDTH", 8)
    monkeypatch.setattr(gram_v2_module, "WINDOW", 3)


def _updates(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[: max(1, n // 5)] = x[: max(1, n // 5)] * 8 + 3  # outliers far from the others
    return x.to(dtype)


def test_chunk_width_depends_on_n_only() -> None:
    assert chunk_width(1) == 1 << 21
    assert chunk_width(100) == (1 << 21) // 100
    assert chunk_width(10_000) == 4096


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_v2_gram_is_close_to_v1(small_chunks: None, dtype: torch.dtype) -> None:
    x = _updates(9, 1001, 0, dtype)
    v1, v2 = gram(x, 1 << 26), gram(x, 1 << 26, version=2)
    assert v2.dtype == torch.float64 and torch.equal(v2, v2.T)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert float((v2 - v1).abs().max()) <= tol * float(v1.diagonal().max())
    assert not torch.equal(v1, v2) or dtype == torch.bfloat16  # float32 products: other bits than v1's


def test_v2_bits_depend_neither_on_threads_nor_on_chunk_elems(small_chunks: None) -> None:
    x = _updates(12, 3001, 1)
    threads = torch.get_num_threads()
    got = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            for chunk_elems in (1 << 26, 100, 7):
                got.append(gram(x, chunk_elems, version=2))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(g, got[0]) for g in got[1:])


def test_v2_float32_overflow_is_multiplied_in_float64(small_chunks: None) -> None:
    x = _updates(5, 200, 2)
    x[1, 50] = 3e19  # its square overflows float32, not float64
    v2 = gram(x, 1 << 26, version=2)
    assert bool(torch.isfinite(v2).all())
    exact = x.double() @ x.double().T
    assert float((v2 - exact).abs().max()) <= 1e-6 * float(exact.diagonal().max())
    r = aggregate("krum", x, torch.ones(5), params=DefenseParams(aggregation_version=2))
    assert bool(r.flags[1])  # the huge update is not the one Krum picks


@pytest.mark.parametrize("rule", GRAM_RULES)
def test_v2_refuses_a_non_finite_update_by_name(small_chunks: None, rule: str) -> None:
    x = _updates(9, 300, 3)
    x[4, 17] = float("nan")
    with pytest.raises(UpdateError, match="client 4"):
        aggregate(rule, x, torch.ones(9), params=DefenseParams(aggregation_version=2))


@pytest.mark.parametrize("rule", GRAM_RULES)
@pytest.mark.parametrize(("n", "d"), [(7, 500), (15, 2001), (23, 777)])
def test_v2_selects_the_clients_v1_selects(small_chunks: None, rule: str, n: int, d: int) -> None:
    x, w = _updates(n, d, n), torch.linspace(10, 100, n, dtype=torch.float64)
    r1 = aggregate(rule, x, w, params=DefenseParams(aggregation_version=1), seed=5)
    r2 = aggregate(rule, x, w, params=DefenseParams(aggregation_version=2), seed=5)
    assert torch.equal(r1.flags, r2.flags)
    if rule in ("krum", "multi_krum", "bulyan"):  # distance rules: the outliers are out (not vacuous)
        assert bool(r2.flags[: max(1, n // 5)].all())
    scale = float(x.double().abs().max())
    assert float((r1.aggregate.double() - r2.aggregate.double()).abs().max()) <= 1e-5 * scale


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="aggregation_version"):
        DefenseParams(aggregation_version=4)
    with pytest.raises(ConfigError, match="aggregation_version"):
        load_config(preset="smoke", overrides=["defense.aggregation_version=0"])


def test_the_version_is_in_the_run_config_and_version_1_keeps_old_digests(tmp_path: Path) -> None:
    """A config without the key is version 1 with the digest it always had, also when a run directory's
    config.toml is read back (what the nodes and the audit do); version 2 is another config (its
    commitments name another digest) and reaches the rule the runner and the audit build."""
    v1 = load_config(preset="smoke", overrides=["defense.aggregation_version=1"])
    v2 = load_config(preset="smoke", overrides=["defense.aggregation_version=2"])
    old = to_toml_dict(v1)
    old["defense"].pop(
        "aggregation_version"
    )  # the presets name version 3 since issue 24: a config without it
    assert RunConfig.model_validate(old).defense.aggregation_version == 1
    assert config_digest(RunConfig.model_validate(old)) == config_digest(v1) != config_digest(v2)
    older = to_toml_dict(v1)
    older["defense"].pop("aggregation_version", None)  # a run directory written before versions existed
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(older))
    assert load_run_config(path).defense.aggregation_version == 1
    path.write_text(tomli_w.dumps(to_toml_dict(v2)))
    back = load_run_config(path)
    assert config_digest(back) == config_digest(v2)
    assert rule_from_config(back).params.aggregation_version == 2
