"""Every robust rule on small hand-computed examples."""

import math

import pytest
import torch

from consortium.defense import DefenseParams, aggregate
from consortium.defense.rules import foolsgold_scores, trim_count

F64 = torch.float64


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def ones(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=F64)


# --- Krum family -------------------------------------------------------------------------------------------


def test_krum_f1_over_three_scalars() -> None:
    # squared distances: 0-1: 0.25, 0-2: 0.64, 1-2: 0.09; k = max(1, 3 - 1 - 2) = 1 nearest neighbour:
    # scores [0.25, 0.09, 0.09] -> tie between 1 and 2 goes to the lowest index -> [0.7]
    r = aggregate("krum", t([[0.2], [0.7], [1.0]]), ones(3), params=DefenseParams(f=1))
    assert torch.equal(r.aggregate, t([[0.7]])[0])
    assert r.weights.tolist() == [0.0, 1.0, 0.0] and r.flags.tolist() == [True, False, True]
    assert r.info["selected"] == [1] and r.info["neighbours"] == 1
    assert r.info["scores"] == pytest.approx([0.25, 0.09, 0.09], abs=1e-12)


def test_multi_krum_f1_keeping_two() -> None:
    # scores [0.09, 0.09, 0.25] -> keep clients 0 and 1 -> (0.2 + 0.5) / 2
    r = aggregate("multi_krum", t([[0.2], [0.5], [1.0]]), ones(3), params=DefenseParams(f=1, multi_krum_m=2))
    assert r.aggregate.item() == pytest.approx(0.35, abs=1e-15)
    assert r.flags.tolist() == [False, False, True] and r.weights.tolist() == [0.5, 0.5, 0.0]
    # kept clients are sample-weighted: (1 * 0.2 + 3 * 0.5) / 4
    r = aggregate(
        "multi_krum", t([[0.2], [0.5], [1.0]]), t([[1, 3, 100]])[0], params=DefenseParams(f=1, multi_krum_m=2)
    )
    assert r.aggregate.item() == pytest.approx(0.425, abs=1e-15)
    # default m = n - f with the default f = (n - 3) // 2 = 1 for n = 5: one client dropped, the outlier
    u = t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [50.0, 50.0]])
    r = aggregate("multi_krum", u, ones(5))
    assert r.info["f"] == 1 and r.info["m"] == 4 and r.flags.tolist() == [False] * 4 + [True]
    assert r.aggregate.tolist() == [0.5, 0.5]


def test_krum_default_f_and_tiny_n() -> None:
    u = t([[0.0], [1.0], [10.0]])
    r = aggregate("krum", u, ones(3))  # f = 0, k = 1: scores [1, 1, 81] -> client 0
    assert r.info["f"] == 0 and r.aggregate.item() == 0.0
    assert aggregate("krum", t([[3.0]]), ones(1)).aggregate.item() == 3.0  # n = 1: nothing to compare
    assert aggregate("krum", t([[3.0], [5.0]]), ones(2)).aggregate.item() == 3.0  # tie -> lowest index


def test_bulyan_small() -> None:
    # n = 7, f = 1: theta = 5 selected by repeated Krum (the +-100 outliers are left out), beta = 3.
    # coordinate 0: selected [0, 1, 2, 3, 4], median 2, closest three {1, 2, 3} -> 2
    # coordinate 1: selected [5, -1, 0, 0.5, 3], median 0.5, closest three {0.5, 0, -1} -> -1/6
    u = t([[0, 5], [1, -1], [2, 0], [3, 0.5], [4, 3], [100, 0], [-100, 0]])
    r = aggregate("bulyan", u, ones(7), params=DefenseParams(f=1))
    assert r.info["theta"] == 5 and r.info["beta"] == 3
    # first Krum pick, k = 4 neighbours: client 3 scores 1.25 + 6.25 + 7.25 + 29.25 = 44 (client 2: 45.25)
    assert r.info["selection_order"][0] == 3
    assert sorted(r.info["selection_order"]) == [0, 1, 2, 3, 4]
    assert r.flags.tolist() == [False] * 5 + [True, True]
    assert r.aggregate[0].item() == 2.0
    assert r.aggregate[1].item() == pytest.approx(-1 / 6, abs=1e-15)
    # shares: coord 0 uses clients 1, 2, 3; coord 1 uses clients 1, 2, 3 -> 1/3 each
    assert r.weights.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    # default f for n = 7 is (7 - 3) // 4 = 1
    assert torch.equal(aggregate("bulyan", u, ones(7)).aggregate, r.aggregate)


def test_bulyan_ties_go_to_the_smaller_value() -> None:
    # n = 3, f = 0: everyone selected, beta = 3 -> plain mean; n = 7, f = 1 with a symmetric coordinate:
    u = t([[0.0], [1.0], [2.0]])
    assert aggregate("bulyan", u, ones(3)).aggregate.item() == 1.0
    # selected values (after Krum) are [-2, -1, 0, 1, 2]; median 0; beta = 3: {0, -1, 1} (no tie) -> 0
    u = t([[-2.0], [-1.0], [0.0], [1.0], [2.0], [90.0], [-90.0]])
    assert aggregate("bulyan", u, ones(7), params=DefenseParams(f=1)).aggregate.item() == 0.0


# --- coordinate-wise -------------------------------------------------------------------------------------


def test_median_odd_and_even() -> None:
    u = t([[1.0, 5.0], [3.0, -1.0], [2.0, 0.0]])
    r = aggregate("median", u, t([[100, 1, 1]])[0])  # sample weights do not matter
    assert r.aggregate.tolist() == [2.0, 0.0]
    assert r.weights.tolist() == [0.0, 0.0, 1.0] and not r.flags.any()
    u = t([[1.0, 7.0], [4.0, 1.0], [2.0, 3.0], [10.0, -5.0]])
    r = aggregate("median", u, ones(4))
    assert r.aggregate.tolist() == [3.0, 2.0]  # (2 + 4) / 2, (1 + 3) / 2
    # coordinate 0 uses clients 1 and 2, coordinate 1 clients 1 and 2: half each per coordinate
    assert r.weights.tolist() == [0.0, 0.5, 0.5, 0.0]
    # float32 in, float32 out: the middle mean is computed in float64 then rounded
    r = aggregate("median", torch.tensor([[1.0], [2.0]]), torch.ones(2))
    assert r.aggregate.dtype == torch.float32 and r.aggregate.item() == 1.5


def test_median_ties_are_shared_in_client_order() -> None:
    r = aggregate("median", t([[1.0], [1.0], [1.0]]), ones(3))
    assert r.aggregate.item() == 1.0 and r.weights.tolist() == [0.0, 1.0, 0.0]


def test_trimmed_mean() -> None:
    # n = 5, trim 0.2 -> k = 1 per end: [1, 2, 3, 4, 100] -> mean(2, 3, 4) = 3; [-50, 0, 1, 2, 3] -> 1
    u = t([[1.0, -50.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0], [100.0, 3.0]])
    r = aggregate("trimmed_mean", u, ones(5), params=DefenseParams(trim_ratio=0.2))
    assert r.aggregate.tolist() == [3.0, 1.0] and r.info["trimmed_per_end"] == 1
    # kept: coord 0 clients 1, 2, 3; coord 1 clients 2, 3, 1 -> shares (2 + 2 + 2) / (3 * 2) ...
    assert r.weights.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 0])
    # default 0.1 with n = 5 trims nothing: the plain mean
    assert aggregate("trimmed_mean", u, ones(5)).aggregate.tolist() == [22.0, -8.8]
    assert aggregate(
        "trimmed_mean", u, ones(5), params=DefenseParams(trim_ratio=0.49)
    ).aggregate.tolist() == [3.0, 1.0]


def test_trim_count() -> None:
    assert trim_count(0.1, 10) == 1 and trim_count(0.29, 100) == 29 and trim_count(0.3, 10) == 3
    assert trim_count(0.1, 9) == 0 and trim_count(0.49, 2) == 0 and trim_count(0.45, 3) == 1


# --- norm-based ------------------------------------------------------------------------------------------


def test_norm_bound() -> None:
    # norms 5, 1, 10; median 5 -> factors 1, 1, 0.5 -> [[3, 4], [0, 1], [3, 4]] weighted 1:1:2
    u = t([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    w = t([[1, 1, 2]])[0]
    r = aggregate("norm_bound", u, w)
    assert r.aggregate.tolist() == [2.25, 3.25] and r.info["bound"] == 5.0
    assert r.info["clip_factors"] == [1.0, 1.0, 0.5] and not r.flags.any()
    assert r.weights.tolist() == [0.25, 0.25, 0.5]
    # explicit bound 1: factors 0.2, 1, 0.1 -> [(0.6 + 0 + 2 * 0.6) / 4, (0.8 + 1 + 2 * 0.8) / 4]
    r = aggregate("norm_bound", u, w, params=DefenseParams(norm_bound=1.0))
    torch.testing.assert_close(r.aggregate, t([[0.45, 0.85]])[0], rtol=0, atol=1e-15)


def _flame_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    benign_dir, bad_dir = torch.randn(64, generator=g, dtype=F64), torch.randn(64, generator=g, dtype=F64)
    benign = [benign_dir * (1 + 0.1 * i) + 0.05 * torch.randn(64, generator=g, dtype=F64) for i in range(7)]
    bad = [20 * bad_dir + 0.05 * torch.randn(64, generator=g, dtype=F64) for _ in range(3)]
    return torch.stack(benign + bad), torch.tensor([10.0] * 7 + [1000.0] * 3, dtype=F64)


def test_flame_flags_the_outlier_cluster() -> None:
    u, w = _flame_data()
    # min_cluster_size 3: HDBSCAN finds the benign cluster (7) and the outlier cluster (3); the larger wins
    r = aggregate("flame", u, w, params=DefenseParams(flame_noise=0.0, flame_min_cluster_size=3))
    assert r.flags.tolist() == [False] * 7 + [True] * 3
    assert r.info["clustered"] and r.info["labels"] == [0] * 7 + [1] * 3
    assert r.weights.tolist() == pytest.approx([1 / 7] * 7 + [0] * 3)  # uniform over admitted
    norms = u.norm(dim=1)
    s = norms.sort().values[4:6].mean()  # median of all 10 norms
    assert r.info["clip_bound"] == pytest.approx(float(s), rel=1e-12)
    clipped = u[:7] * torch.clamp(s / norms[:7], max=1.0)[:, None]
    torch.testing.assert_close(r.aggregate, clipped.mean(0), rtol=1e-12, atol=1e-12)
    assert any(f < 1.0 for f in r.info["clip_factors"][:7])  # the larger benign ones were clipped


def test_flame_default_min_cluster_size() -> None:
    """Default n // 2 + 1 = 6: the outliers cannot form a cluster, so the benign cluster is HDBSCAN's root
    cluster; its single-cluster labelling keeps only the points that stay until the cluster falls below
    min_cluster_size, so the benign update on the cluster's edge (client 1, farthest from the others in
    cosine distance) is rejected as well. This is HDBSCAN's (and FLAME's) behaviour, not a bug here."""
    u, w = _flame_data()
    r = aggregate("flame", u, w, params=DefenseParams(flame_noise=0.0))
    assert r.info["min_cluster_size"] == 6
    assert r.flags.tolist() == [False, True] + [False] * 5 + [True] * 3
    torch.testing.assert_close(r.weights[r.weights > 0], torch.full((6,), 1 / 6, dtype=F64))


def test_flame_noise_is_seeded() -> None:
    u, w = _flame_data()
    clean = aggregate("flame", u, w, params=DefenseParams(flame_noise=0.0)).aggregate
    a = aggregate("flame", u, w, seed=5).aggregate
    b = aggregate("flame", u, w, seed=5).aggregate
    c = aggregate("flame", u, w, seed=6).aggregate
    assert torch.equal(a, b) and not torch.equal(a, c)
    s = aggregate("flame", u, w).info["clip_bound"]
    noise = a - clean
    assert 0.5 * 0.001 * s < float(noise.std()) < 1.5 * 0.001 * s
    # the noise is drawn on the CPU from the seed: recomputable by anyone
    gen = torch.Generator().manual_seed(5)
    torch.testing.assert_close(
        noise, torch.randn(64, generator=gen, dtype=F64) * 0.001 * s, rtol=0, atol=1e-12
    )
    # huge (hash-derived) seeds are reduced mod 2^64
    assert torch.isfinite(aggregate("flame", u, w, seed=2**200 + 5).aggregate).all()


def test_flame_without_a_cluster_admits_everyone() -> None:
    r = aggregate("flame", t([[1.0, 2.0]]), ones(1), params=DefenseParams(flame_noise=0.0))
    assert not r.info["clustered"] and r.aggregate.tolist() == [1.0, 2.0]


# --- similarity-based ------------------------------------------------------------------------------------


def test_fltrust_excludes_negative_cosine() -> None:
    # g0 = [1, 0]; cosines 1, 1/sqrt(2), -1 -> TS [1, 0.7071, 0]; rescaled to |g0| = 1:
    # [1, 0] and [0.7071, 0.7071] -> (1 * [1, 0] + 0.7071 * [0.7071, 0.7071]) / 1.7071
    u = t([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    r = aggregate("fltrust", u, t([[1, 1, 1000]])[0], root_update=t([[1.0, 0.0]])[0])
    c = 1 / math.sqrt(2)
    want = torch.tensor([1.5 / (1 + c), 0.5 / (1 + c)], dtype=F64)
    torch.testing.assert_close(r.aggregate, want, rtol=0, atol=1e-15)
    assert r.flags.tolist() == [False, False, True]
    assert r.info["trust_scores"] == pytest.approx([1.0, c, 0.0])
    assert r.weights.tolist() == pytest.approx([1 / (1 + c), c / (1 + c), 0.0])
    # nobody trusted -> zero aggregate, all flagged
    r = aggregate("fltrust", u[2:], ones(1), root_update=t([[1.0, 0.0]])[0])
    assert r.aggregate.tolist() == [0.0, 0.0] and r.flags.tolist() == [True] and r.weights.tolist() == [0.0]


def test_foolsgold_downweights_identical_sybils() -> None:
    # three honest clients along orthogonal axes, two sybils sending the same update
    u = t([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 5], [0, 0, 0, 5]])
    r = aggregate("foolsgold", u, t([[1, 1, 2, 100, 100]])[0])
    assert r.flags.tolist() == [False, False, False, True, True]
    assert r.info["alpha"] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert r.aggregate.tolist() == [0.25, 0.5, 1.5, 0.0]  # sample-weighted over the honest: 1:1:2
    # with history: the sybils look alike over time even if this round's updates differ
    pad = torch.zeros(5, 1, dtype=F64)
    u2 = torch.cat([u, pad], 1)
    u2[4] = t([[0, 0, 0, 0, 5]])[0]  # this round, the second sybil is orthogonal to everyone
    assert not aggregate("foolsgold", u2, ones(5)).flags.any()
    r = aggregate("foolsgold", u2, ones(5), history=torch.cat([u, pad], 1))
    assert r.flags.tolist() == [False, False, False, True, True] and r.info["used_history"]


def test_foolsgold_scores_follow_the_reference_algorithm() -> None:
    # cs (self set to 0): v = [0.5, 0.5, 0.9, 0.9]; pardoning scales cs[i, j] by v_i / v_j where v_i < v_j
    cs = t([[1.0, 0.5, 0.1, 0.2], [0.5, 1.0, 0.0, 0.3], [0.1, 0.0, 1.0, 0.9], [0.2, 0.3, 0.9, 1.0]])
    a = foolsgold_scores(cs, 1.0)
    # rows 0, 1 after pardoning: max(0.5, 0.1 * 5/9, 0.2 * 5/9) = 0.5, max(0.5, 0, 0.3 * 5/9) = 0.5
    # alpha = 1 - max = [0.5, 0.5, 0.1, 0.1] -> / 0.5 = [1, 1, 0.2, 0.2] -> [0.99, 0.99, 0.2, 0.2]
    # logit: ln(99) + 0.5 > 1 -> 1; ln(0.25) + 0.5 = -0.886 -> 0
    assert a.tolist() == [1.0, 1.0, 0.0, 0.0]
    # a smaller confidence keeps partial weights: alpha 0.6 -> ln(1.5) + 0.5 = 0.9055
    cs = t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.4], [0.0, 0.4, 1.0]])
    a = foolsgold_scores(cs, 1.0)  # alpha = [1, 0.6, 0.6] -> [0.99, 0.6, 0.6]
    assert a.tolist() == pytest.approx([1.0, math.log(1.5) + 0.5, math.log(1.5) + 0.5])
    a = foolsgold_scores(cs, 0.5)
    assert a.tolist() == pytest.approx([1.0, 0.5 * (math.log(1.5) + 0.5), 0.5 * (math.log(1.5) + 0.5)])
    # everyone identical: nobody gets weight
    assert foolsgold_scores(torch.ones(3, 3, dtype=F64), 1.0).tolist() == [0.0, 0.0, 0.0]


def test_rlr_flips_low_agreement_coordinates() -> None:
    # threshold 3 of n = 4. col 0: signs +4 -> kept, mean 2.5; col 1: signs 0 -> flipped, mean -0.5 -> 0.5;
    # col 2: signs +2 < 3 -> flipped, mean 0.5 -> -0.5
    u = t([[1, 1, 1], [2, 2, 1], [3, -1, 1], [4, -4, -1]])
    r = aggregate("rlr", u, ones(4), params=DefenseParams(rlr_threshold=3))
    assert r.aggregate.tolist() == [2.5, 0.5, -0.5]
    assert r.info["flipped_fraction"] == pytest.approx(2 / 3) and r.info["threshold"] == 3
    assert not r.flags.any()
    # default threshold max(1, n // 4) = 1: only an exact sign tie (col 1) flips
    r = aggregate("rlr", u, ones(4))
    assert r.aggregate.tolist() == [2.5, 0.5, 0.5] and r.info["threshold"] == 1
    # sample weights weight the mean, not the vote: col 0 (1*1 + 3*4) / 4
    r = aggregate("rlr", u, t([[1, 0, 0, 3]])[0], params=DefenseParams(rlr_threshold=3))
    assert r.aggregate.tolist() == [3.25, -(1 - 12) / 4, -(1 - 3) / 4]
