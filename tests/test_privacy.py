"""Client-level DP: the accountant against published and closed-form references, the mechanism's clipping
and noise, the pure candidate's recomputability, named config errors, and small end-to-end runs (tiny
model) with ε in the report, the budget stop, and the audit of a chain run with central DP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from scipy.optimize import brentq
from scipy.stats import norm

from consortium.config import ConfigError, load_config
from consortium.privacy import (
    DpRule,
    PrivacyBudgetExceeded,
    central_noise,
    clip_updates,
    distributed_noise_share,
    epsilon,
    epsilon_of_rounds,
    noise_multiplier_for,
)
from consortium.privacy.mechanism import noise_seed
from consortium.protocol import AggregationRule, Commitment, compute_candidate, put_vector
from consortium.store import BlobStore

DELTA = 1e-5

# ---------------------------------------------------------------- accountant


@pytest.mark.parametrize(("method", "expected"), [("rdp", 7.90), ("pld", 7.05)])
def test_accountant_matches_the_oracle(method: str, expected: float) -> None:
    # issue 9's oracle: q = 0.1, z = 1.0, T = 100, δ = 1e-5 (the figures of Abadi et al. / TF Privacy)
    assert epsilon(1.0, 0.1, 100, DELTA, method) == pytest.approx(expected, abs=0.02)  # type: ignore[arg-type]


def test_inverse_round_trips_rdp_subsampled() -> None:
    target = epsilon(1.0, 0.1, 100, DELTA, "rdp")
    z = noise_multiplier_for(target, 0.1, 100, DELTA, "rdp")
    assert z == pytest.approx(1.0, abs=1e-3)
    assert epsilon(z, 0.1, 100, DELTA, "rdp") <= target + 1e-9


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact ε of the Gaussian mechanism with sensitivity/σ = mu (Balle & Wang 2018, Theorem 8);
    T Gaussians compose exactly into one with mu = sqrt(Σ mu_i²) (Dong, Roth & Su 2019)."""

    def gap(eps: float) -> float:
        return norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu) - delta

    return brentq(gap, 0.0, 100.0)


def test_pld_of_composed_gaussians_matches_the_closed_form() -> None:
    zs = [1.0, 1.0, 0.7]  # heterogeneous effective multipliers, q = 1 (public participation)
    exact = _gaussian_epsilon(math.sqrt(sum(z**-2 for z in zs)), DELTA)
    assert epsilon_of_rounds(zs, DELTA, "pld") == pytest.approx(exact, abs=0.02)
    assert epsilon_of_rounds(zs, DELTA, "rdp") >= exact  # RDP is an upper bound, never below exact


def test_inverse_round_trips_pld() -> None:
    z = noise_multiplier_for(8.0, 1.0, 3, DELTA, "pld")
    eps = epsilon(z, 1.0, 3, DELTA, "pld")
    assert 7.95 <= eps <= 8.0 + 1e-6
    assert eps == pytest.approx(_gaussian_epsilon(math.sqrt(3) / z, DELTA), abs=0.02)


def test_accountant_edge_cases() -> None:
    assert epsilon(0.0, 1.0, 3, DELTA) == math.inf
    assert epsilon(1.0, 1.0, 0, DELTA) == 0.0
    with pytest.raises(ValueError, match="delta"):
        epsilon(1.0, 1.0, 3, 0.0)
    with pytest.raises(ValueError, match="sampling rate"):
        epsilon(1.0, 1.5, 3, DELTA)


# ---------------------------------------------------------------- mechanism


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 300),
    scale=st.floats(1e-4, 1e3),
    clip=st.floats(1e-3, 10.0),
    seed=st.integers(0, 2**31),
)
def test_clipping_bounds_every_update(n: int, d: int, scale: float, clip: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g) * scale
    clipped, norms = clip_updates(u, clip)
    after = torch.linalg.vector_norm(clipped.double(), dim=1)
    assert torch.all(after <= clip * (1 + 1e-6))  # float32 rounding of the entries only
    assert torch.allclose(norms, torch.linalg.vector_norm(u.double(), dim=1))
    for i in range(n):
        if norms[i] <= clip:
            assert torch.equal(clipped[i], u[i])  # under the bound: untouched
        else:  # over it: same direction, norm exactly C (to rounding)
            assert after[i] == pytest.approx(clip, rel=1e-6)
            assert torch.allclose(clipped[i].double() * norms[i] / clip, u[i].double(), rtol=1e-5)


def test_clip_must_be_positive() -> None:
    with pytest.raises(ValueError, match="clip"):
        clip_updates(torch.ones(1, 3), -1.0)


def test_central_noise_statistics() -> None:
    n, std = 400_000, 0.3
    x = central_noise(n, std, seed=11).double()
    # mean of n N(0, σ²) draws has std σ/√n; the sample std's relative error has std ≈ 1/√(2n): 5 sigmas
    assert abs(float(x.mean())) < 5 * std / math.sqrt(n)
    assert float(x.std()) == pytest.approx(std, rel=5 / math.sqrt(2 * n))


def test_central_noise_is_recomputable_from_the_seed() -> None:
    a, b = central_noise(1000, 1.0, 42), central_noise(1000, 1.0, 42)
    assert torch.equal(a, b)
    assert not torch.equal(a, central_noise(1000, 1.0, 43))
    assert noise_seed(42) != 42 and noise_seed(42) == noise_seed(42)


def test_distributed_shares_sum_to_the_target_variance() -> None:
    n_parts, d, std_total = 8, 200_000, 2.0
    total = sum(
        distributed_noise_share(d, std_total, n_parts, seed=1000 + i).double() for i in range(n_parts)
    )
    assert float(total.std()) == pytest.approx(std_total, rel=5 / math.sqrt(2 * d))
    one = distributed_noise_share(d, std_total, n_parts, seed=7).double()
    assert float(one.std()) == pytest.approx(std_total / math.sqrt(n_parts), rel=5 / math.sqrt(2 * d))


def test_effective_multiplier_of_distributed_mean_drops_with_dropouts() -> None:
    rule = DpRule("distributed", clip=1.0, noise_multiplier=2.0, planned=4)
    agg = torch.zeros(5)
    _, full = rule.finish(agg, "fedavg", torch.ones(4, dtype=torch.float64), 0)
    assert full["noise_multiplier_effective"] == pytest.approx(2.0)
    _, two = rule.finish(agg, "fedavg", torch.ones(2, dtype=torch.float64), 0)
    assert two["noise_multiplier_effective"] == pytest.approx(2.0 * math.sqrt(2 / 4))
    _, robust = rule.finish(agg, "median", torch.ones(4, dtype=torch.float64), 0)
    assert robust["noise_multiplier_effective"] == pytest.approx(2.0 / math.sqrt(4))  # one blob's share


# ---------------------------------------------------------------- the pure candidate

LAYOUT = [("a.weight", (4, 8)), ("b.weight", (6,))]
DIM = 38


def _round(tmp: Path, norms: list[float], counts: list[int]) -> tuple[BlobStore, str, list[Commitment]]:
    store = BlobStore(tmp / "store")
    g = torch.Generator().manual_seed(3)
    glob = put_vector(store, torch.randn(DIM, generator=g), LAYOUT)
    commits = []
    for i, (nrm, n) in enumerate(zip(norms, counts, strict=True)):
        u = torch.randn(DIM, generator=g)
        u = u / u.norm() * nrm
        commits.append(Commitment(f"org{i}", put_vector(store, u, LAYOUT), n))
    return store, glob, commits


def test_central_candidate_is_clip_mean_noise_and_bit_identical(tmp_path: Path) -> None:
    store, glob, commits = _round(tmp_path, [0.5, 3.0, 10.0], [10, 30, 60])
    clip, z, seed = 1.0, 1.3, 987654321
    rule = AggregationRule("fedavg", "samples", dp=DpRule("central", clip, z, planned=3))
    a = compute_candidate(store, LAYOUT, glob, commits, rule, seed=seed)
    b = compute_candidate(store, LAYOUT, glob, commits, rule, seed=seed)
    assert torch.equal(a.vector, b.vector)  # what the audit relies on
    # an independent reference: clip by hand, weighted mean, noise of std z·C·max(w) from the tagged seed
    from consortium.protocol import get_vector

    g0 = get_vector(store, glob, LAYOUT).double()
    us = [get_vector(store, c.blob, LAYOUT).double() for c in commits]
    w = torch.tensor([10.0, 30.0, 60.0], dtype=torch.float64) / 100
    mean = sum(wi * u * min(1.0, clip / float(u.norm())) for wi, u in zip(w, us, strict=True))
    std = z * clip * 0.6
    noise = torch.randn(DIM, generator=torch.Generator().manual_seed(noise_seed(seed)), dtype=torch.float32)
    assert torch.allclose(a.vector.double(), g0 + mean + noise.double() * std, atol=1e-5)
    dp = a.result.info["dp"]
    assert dp["sensitivity"] == pytest.approx(0.6) and dp["noise_std"] == pytest.approx(std)
    assert dp["clipped_fraction"] == pytest.approx(2 / 3)
    other = compute_candidate(store, LAYOUT, glob, commits, rule, seed=seed + 1)
    assert not torch.equal(other.vector, a.vector)


def test_robust_rule_under_central_dp_uses_the_ball_diameter(tmp_path: Path) -> None:
    store, glob, commits = _round(tmp_path, [5.0, 6.0, 7.0, 8.0], [1, 1, 1, 1])
    rule = AggregationRule("median", "uniform", dp=DpRule("central", 1.0, 0.0, planned=4))
    cand = compute_candidate(store, LAYOUT, glob, commits, rule, seed=1)
    from consortium.protocol import get_vector

    step = cand.vector - get_vector(store, glob, LAYOUT)
    assert float(step.norm()) <= 1.0 + 1e-5  # the aggregate itself is forced into the C-ball
    assert cand.result.info["dp"]["sensitivity"] == pytest.approx(2.0)


# ---------------------------------------------------------------- config errors

NOISY = ["privacy.mode=central", "privacy.clip=0.1", "privacy.noise_multiplier=1.0", "privacy.delta=1e-5"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["privacy.mode=central", "privacy.clip=-1", "privacy.noise_multiplier=1", "privacy.delta=1e-5"],
            "privacy.clip: Input should be greater than 0",
        ),
        (
            ["privacy.mode=central", "privacy.clip=0.1", "privacy.noise_multiplier=1.0"],
            "privacy: delta is required",
        ),
        (
            ["privacy.mode=central", "privacy.clip=0.1", "privacy.target_epsilon=8"],
            "privacy: delta is required",
        ),
        ([*NOISY, "privacy.target_epsilon=8"], "privacy: give noise_multiplier or target_epsilon"),
        (
            ["privacy.mode=central", "privacy.noise_multiplier=1", "privacy.delta=1e-5"],
            "privacy: clip is required",
        ),
        ([*NOISY[:3], "privacy.delta=1.5"], "privacy.delta: Input should be less than 1"),
        ([*NOISY[:2], "privacy.noise_multiplier=-0.5", "privacy.delta=1e-5"], "privacy.noise_multiplier"),
        (
            [*NOISY[:2], "privacy.noise_multiplier=0", "privacy.epsilon_budget=3"],
            "privacy: epsilon_budget needs noise",
        ),
        (["privacy.mode=secret"], "privacy.mode"),
        ([*NOISY, "lora.variant=flora"], "privacy: not supported with lora.variant 'flora'"),
    ],
)
def test_bad_dp_config_names_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(preset="smoke", overrides=overrides)


# ---------------------------------------------------------------- end to end (tiny model)

SMALL = ["eval.isolated_baseline=false", "data.n_train=16", "data.n_test=4", "train.local_steps=2"]


def _run(tmp: Path, overrides: list[str]) -> tuple[Path, dict]:
    from consortium.sim import Simulation

    sim = Simulation(load_config(preset="smoke", overrides=[*SMALL, *overrides]), Console(quiet=True))
    path = sim.run(tmp, plots=False)
    return path, json.loads((path / "report.json").read_text())


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_fedavg_run_reports_epsilon_every_round(tmp_path: Path, mode: str) -> None:
    _, report = _run(tmp_path, ["protocol=fedavg", "rounds=2", f"privacy.mode={mode}", *NOISY[1:]])
    assert report["status"] == "complete" and report["privacy"]["mode"] == mode
    eps = [r["privacy"]["epsilon"] for r in report["rounds_detail"]]
    # everyone proposes every round (q = 1): ε after round t is t Gaussian mechanisms at z = 1
    assert eps == pytest.approx([epsilon(1.0, 1.0, t, DELTA) for t in (1, 2)], rel=1e-9)
    assert report["privacy"]["epsilon"] == eps[-1]
    last = report["rounds_detail"][-1]["privacy"]
    assert last["noise_multiplier_effective"] == pytest.approx(1.0)
    if mode == "distributed":  # a store reader sees each update with its own share only: z/√4
        assert last["epsilon_store"] == pytest.approx(epsilon(0.5, 1.0, 2, DELTA), rel=1e-9)
    else:
        assert last["epsilon_store"] is None
    md = _md(tmp_path)
    assert "## Differential privacy" in md and f"| 2 | {eps[-1]:.3f} |" in md


def _md(tmp: Path) -> str:
    return next(tmp.glob("*/report.md")).read_text()


def test_target_epsilon_is_resolved_into_the_run_config(tmp_path: Path) -> None:
    path, report = _run(
        tmp_path,
        [
            "protocol=fedavg",
            "rounds=2",
            "privacy.mode=central",
            "privacy.clip=0.1",
            "privacy.target_epsilon=6",
            "privacy.delta=1e-5",
        ],
    )
    written = (path / "config.toml").read_text()
    assert "noise_multiplier" in written and "target_epsilon" not in written
    assert report["privacy"]["target_epsilon"] == 6
    assert 5.99 <= report["privacy"]["epsilon"] <= 6.0 + 1e-9


def test_budget_exceeded_stops_the_run_with_the_report_written(tmp_path: Path) -> None:
    # z = 1: one round costs ε 4.73, two 7.08 (RDP, δ = 1e-5); a budget of 5 pays for one round only
    with pytest.raises(PrivacyBudgetExceeded, match=r"privacy\.epsilon_budget: round 2 would take ε"):
        _run(
            tmp_path,
            ["protocol=fedavg", "rounds=3", "privacy.mode=central", *NOISY[1:], "privacy.epsilon_budget=5"],
        )
    report = json.loads(next(tmp_path.glob("*/report.json")).read_text())
    assert report["status"] == "stopped" and report["rounds_completed"] == 1
    assert "epsilon_budget" in report["privacy"]["stopped"] and "epsilon_budget" in report["error"]
    assert report["privacy"]["epsilon"] <= 5
    assert "**Stopped:**" in _md(tmp_path)
    assert next(tmp_path.glob("*/adapter")).is_dir()  # what the budget paid for is still exported


def test_chain_run_with_central_dp_passes_the_audit(tmp_path: Path) -> None:
    pytest.importorskip("web3")
    from consortium.audit import audit_run

    path, report = _run(tmp_path, ["protocol=chain", "rounds=2", *NOISY])
    assert report["status"] == "complete"
    details = report["rounds_detail"]
    assert all(d["privacy"]["noise_std"] > 0 for d in details)
    # ε is charged to the proposers only: whoever never proposed has spent nothing
    proposed = {p for d in details for p in d["proposers"]}
    assert set(details[-1]["privacy"]["epsilon_by_participant"]) == proposed
    result = audit_run(path)
    assert result.ok, result.problems
    assert result.checked["candidates recomputed"] == 2


def test_privacy_off_leaves_the_config_digest_as_before() -> None:
    # the digest is named in every chain commitment: an off [privacy] section must not change it, or
    # run directories written before DP existed would no longer audit
    from consortium.config import config_digest, to_toml_dict

    off = load_config(preset="smoke")
    assert "privacy" not in to_toml_dict(off)
    on = load_config(preset="smoke", overrides=NOISY)
    assert to_toml_dict(on)["privacy"]["clip"] == 0.1
    assert config_digest(on) != config_digest(off)


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_updates_gives_the_bits_of_the_whole_float64_formula(n: int, dtype: torch.dtype) -> None:
    """clip_updates works in chunks without a float64 copy of everything; same bits as the formula."""
    g = torch.Generator().manual_seed(n)
    u = (torch.randn(n, 300_007, generator=g, dtype=torch.float64) * torch.linspace(0.001, 3, n)[:, None]).to(
        dtype
    )
    for clip in (0.5, 300.0, 1e9):
        clipped, norms = clip_updates(u, clip)
        want_norms = torch.linalg.vector_norm(u.to(torch.float64), dim=1)
        scale = torch.where(
            want_norms > clip, clip / want_norms.clamp_min(1e-300), torch.ones_like(want_norms)
        )
        assert torch.equal(norms, want_norms)
        assert torch.equal(clipped, (u.to(torch.float64) * scale[:, None]).to(dtype))
