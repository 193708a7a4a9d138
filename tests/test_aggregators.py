"""Aggregation API: registry, input checks, parameters, determinism, chunking, CPU vs CUDA."""

import dataclasses
import json

import pytest
import torch

import consortium.defense as defense
from consortium.defense import (
    AGGREGATORS,
    AggregateResult,
    DefenseParams,
    UpdateError,
    aggregate,
    register,
    stack_updates,
)
from consortium.defense.aggregators import fedavg

RULES = [
    "fedavg",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "norm_bound",
    "flame",
    "foolsgold",
    "fltrust",
    "rlr",
]


def _data(n: int = 12, d: int = 301, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=dtype)
    u[: n // 4] = u[: n // 4] * 8 + 3  # a few large outliers
    w = torch.rand(n, generator=g, dtype=torch.float64) * 90 + 10
    root = torch.randn(d, generator=g, dtype=dtype) + u[n // 4 :].mean(0)
    return u, w, root


def _run(name: str, u, w, root, **kw) -> AggregateResult:
    return aggregate(name, u, w, root_update=root if name == "fltrust" else None, seed=7, **kw)


def test_registry_names_and_reexports() -> None:
    assert sorted(AGGREGATORS) == sorted(RULES)
    from consortium.defense import aggregators

    assert aggregators.AGGREGATORS is AGGREGATORS and aggregators.aggregate is aggregate
    for name in defense.__all__:
        assert hasattr(defense, name)
    with pytest.raises(ValueError, match="unknown aggregator 'nope'; known: bulyan, fedavg"):
        aggregate("nope", torch.ones(1, 1), torch.ones(1))
    with pytest.raises(ValueError, match="registered twice"):
        register("fedavg")(fedavg)


def test_fedavg_hand_computed() -> None:
    updates = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, -3.0], [0.0, 0.0, 0.0]])
    # (1*[1,2,3] + 1*[3,6,-3] + 2*[0,0,0]) / 4 = [1, 2, 0]
    r = aggregate("fedavg", updates, torch.tensor([1.0, 1.0, 2.0]))
    assert torch.equal(r.aggregate, torch.tensor([1.0, 2.0, 0.0]))
    assert torch.equal(r.weights, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    assert not r.flags.any() and r.flags.dtype == torch.bool
    # weights of 1/3 are not exact in binary: 3/3 - 3/3 may come out as 5.6e-17 or 0 depending on how the
    # CPU fuses the multiply-add, so this hand vector holds to float32 rounding, not bit for bit
    torch.testing.assert_close(
        aggregate("fedavg", updates, torch.ones(3)).aggregate,
        torch.tensor([4 / 3, 8 / 3, 0.0]),
        rtol=0,
        atol=1e-6,
    )
    # integer sample counts are fine
    assert torch.equal(aggregate("fedavg", updates, torch.tensor([1, 1, 2])).aggregate, r.aggregate)


def test_fedavg_order_independent_bits() -> None:
    g = torch.Generator().manual_seed(0)
    u, w = torch.randn(7, 1000, generator=g), torch.rand(7, generator=g) + 0.1
    perm = torch.randperm(7, generator=g)
    assert torch.equal(aggregate("fedavg", u, w).aggregate, aggregate("fedavg", u[perm], w[perm]).aggregate)


@pytest.mark.parametrize(
    ("updates", "weights", "msg"),
    [
        (torch.ones(3), torch.ones(3), "2-D"),
        (torch.ones(0, 3), torch.ones(0), "empty"),
        (torch.ones(2, 0), torch.ones(2), "empty"),
        (torch.ones(2, 3), torch.ones(3), "weights must have shape"),
        (torch.ones(2, 3, dtype=torch.long), torch.ones(2), "floating point"),
        (torch.tensor([[1.0, 0.0], [0.0, float("nan")]]), torch.ones(2), "update from 'client 1': .*NaN"),
        (torch.tensor([[float("inf"), 0.0], [0.0, 0.0]]), torch.ones(2), "update from 'client 0': .*Inf"),
        (torch.ones(2, 3), torch.tensor([1.0, -1.0]), "'client 1' .*non-negative"),
        (torch.ones(2, 3), torch.tensor([1.0, float("nan")]), "'client 1' .*non-negative"),
        (torch.ones(2, 3), torch.zeros(2), "not all zero"),
    ],
)
@pytest.mark.parametrize("name", RULES)
def test_bad_inputs_refused(name: str, updates: torch.Tensor, weights: torch.Tensor, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        aggregate(name, updates, weights, root_update=torch.ones(updates.shape[-1]))


def test_bad_update_names_the_client() -> None:
    u = torch.zeros(3, 5)
    u[2, 4] = float("nan")
    with pytest.raises(UpdateError, match="update from 'org3': contains NaN or Inf"):
        aggregate("median", u, torch.ones(3), clients=["org1", "org2", "org3"])
    # the check is chunked over columns: a NaN in the last chunk is still found
    with pytest.raises(UpdateError, match="'org3'"):
        aggregate(
            "median", u, torch.ones(3), clients=["org1", "org2", "org3"], params=DefenseParams(chunk_elems=3)
        )
    with pytest.raises(ValueError, match="clients has 2 names for 3 updates"):
        aggregate("fedavg", torch.zeros(3, 5), torch.ones(3), clients=["a", "b"])


def test_stack_updates() -> None:
    names, x = stack_updates({"org2": torch.tensor([3.0, 4.0]), "org1": torch.tensor([1.0, 2.0])})
    assert names == ["org1", "org2"] and torch.equal(x, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    ok = torch.zeros(3)
    cases = [
        ({"a": ok, "b": torch.zeros(2, 3)}, None, "update from 'b': expected a flat 1-D tensor"),
        ({"a": ok, "b": torch.zeros(4)}, None, "update from 'b': has 4 elements, expected 3"),
        ({"a": ok, "b": ok}, 4, "update from 'a': has 3 elements, expected 4"),
        ({"a": ok, "b": torch.zeros(3, dtype=torch.long)}, None, "update from 'b': must be floating point"),
        ({"a": ok, "b": torch.zeros(3, dtype=torch.float64)}, None, "update from 'b': dtype torch.float64"),
        (
            {"a": ok, "org3": torch.tensor([0.0, float("nan"), 0])},
            None,
            "update from 'org3': contains NaN or Inf",
        ),
        ({"a": ok, "b": [0.0, 0.0, 0.0]}, None, "update from 'b': expected a torch.Tensor"),
    ]
    for updates, d, msg in cases:
        with pytest.raises(UpdateError, match=msg):
            stack_updates(updates, d)
    with pytest.raises(ValueError, match="empty"):
        stack_updates({})


def test_root_and_history_checked() -> None:
    u, w = torch.randn(4, 6), torch.ones(4)
    with pytest.raises(ValueError, match="fltrust needs root_update"):
        aggregate("fltrust", u, w)
    with pytest.raises(ValueError, match="root_update must be a 1-D tensor of length 6"):
        aggregate("fltrust", u, w, root_update=torch.ones(5))
    with pytest.raises(ValueError, match="root_update contains NaN"):
        aggregate("fltrust", u, w, root_update=torch.full((6,), float("nan")))
    with pytest.raises(ValueError, match="history must have the updates' shape"):
        aggregate("foolsgold", u, w, history=torch.ones(3, 6))
    h = torch.ones(4, 6)
    h[1, 0] = float("inf")
    with pytest.raises(UpdateError, match="history of 'b': contains NaN or Inf"):
        aggregate("foolsgold", u, w, history=h, clients=list("abcd"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trim_ratio": 0.6}, "trim_ratio"),
        ({"trim_ratio": -0.1}, "trim_ratio"),
        ({"trim_ratio": float("nan")}, "trim_ratio"),
        ({"norm_bound": -1.0}, "norm_bound"),
        ({"norm_bound": 0.0}, "norm_bound"),
        ({"f": -1}, "f"),
        ({"f": 1.5}, "f"),
        ({"multi_krum_m": 0}, "multi_krum_m"),
        ({"flame_noise": -0.1}, "flame_noise"),
        ({"flame_min_cluster_size": 1}, "flame_min_cluster_size"),
        ({"foolsgold_confidence": 0.0}, "foolsgold_confidence"),
        ({"rlr_threshold": 0}, "rlr_threshold"),
        ({"chunk_elems": 0}, "chunk_elems"),
    ],
)
def test_bad_params_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"defense\.{field} must be"):
        DefenseParams(**kwargs)


def test_params_that_depend_on_n() -> None:
    u, w = torch.randn(6, 4), torch.ones(6)
    with pytest.raises(ValueError, match=r"bulyan needs n >= 4f \+ 3 clients, got n = 6 with defense\.f = 1"):
        aggregate("bulyan", u, w, params=DefenseParams(f=1))
    with pytest.raises(ValueError, match=r"bulyan needs n >= 4f \+ 3 clients, got n = 2 with defense\.f = 0"):
        aggregate("bulyan", u[:2], w[:2])
    with pytest.raises(ValueError, match=r"defense\.f = 6 must be < n = 6"):
        aggregate("krum", u, w, params=DefenseParams(f=6))
    with pytest.raises(ValueError, match=r"defense\.multi_krum_m = 7 must be <= n = 6"):
        aggregate("multi_krum", u, w, params=DefenseParams(multi_krum_m=7))
    with pytest.raises(ValueError, match=r"defense\.rlr_threshold = 7 must be <= n = 6"):
        aggregate("rlr", u, w, params=DefenseParams(rlr_threshold=7))
    with pytest.raises(ValueError, match=r"defense\.flame_min_cluster_size = 7 must be <= n = 6"):
        aggregate("flame", u, w, params=DefenseParams(flame_min_cluster_size=7))
    with pytest.raises(TypeError, match="params must be a DefenseParams"):
        aggregate("fedavg", u, w, params={"f": 1})  # type: ignore[arg-type]


def test_params_dataclass_shape() -> None:
    p = DefenseParams()
    assert dataclasses.is_dataclass(p) and DefenseParams.__pydantic_config__ == {"extra": "forbid"}
    assert "__pydantic_config__" not in {f.name for f in dataclasses.fields(p)}
    assert (p.f, p.multi_krum_m, p.trim_ratio, p.norm_bound, p.flame_noise) == (None, None, 0.1, None, 0.001)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.f = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_result_contract_and_determinism(name: str, dtype: torch.dtype) -> None:
    u, w, root = _data(dtype=dtype)
    r1, r2 = _run(name, u, w, root), _run(name, u.clone(), w.clone(), root.clone())
    n, d = u.shape
    assert r1.aggregate.shape == (d,) and r1.aggregate.dtype == dtype and r1.aggregate.device == u.device
    assert r1.weights.shape == (n,) and r1.weights.dtype == torch.float64
    assert r1.flags.shape == (n,) and r1.flags.dtype == torch.bool
    assert (r1.weights >= 0).all() and abs(float(r1.weights.sum()) - 1.0) < 1e-12
    json.dumps(r1.info)  # JSON-able
    # same input twice -> bit-identical output
    assert torch.equal(r1.aggregate, r2.aggregate)
    assert torch.equal(r1.weights, r2.weights) and torch.equal(r1.flags, r2.flags)
    assert r1.info == r2.info


SCALARS_SUMMED_OVER_CHUNKS = {"norm_bound", "flame", "fltrust"}


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_elems", [1, 37])
def test_chunked_equals_unchunked(name: str, dtype: torch.dtype, chunk_elems: int) -> None:
    """Tiny chunks (down to one column at a time) vs one chunk: every coordinate is reduced on its own, so
    the aggregate is bit-identical, except where a per-client scalar summed over the chunks (L2 norms,
    dot products with the root) scales the updates: norm_bound, FLAME and FLTrust then agree to 1e-12
    relative in float64 (float32 rounding hides the difference: bit-identical there too). Selections
    (Krum family, FoolsGold, FLAME's clusters) come from a Gram matrix summed over chunks; they agree."""
    u, w, root = _data(dtype=dtype)
    big = _run(name, u, w, root)
    small = _run(name, u, w, root, params=DefenseParams(chunk_elems=chunk_elems))
    assert torch.equal(big.flags, small.flags)
    if name == "fltrust":
        torch.testing.assert_close(big.weights, small.weights, rtol=1e-12, atol=1e-15)
    else:
        assert torch.equal(big.weights, small.weights)
    if name in SCALARS_SUMMED_OVER_CHUNKS and dtype == torch.float64:
        torch.testing.assert_close(big.aggregate, small.aggregate, rtol=1e-12, atol=1e-12)
    else:
        assert torch.equal(big.aggregate, small.aggregate)


def test_a_rule_cannot_be_fooled_by_the_caller_keeping_gradients() -> None:
    u = torch.randn(5, 8, requires_grad=True)
    r = aggregate("median", u, torch.ones(5))
    assert not r.aggregate.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", RULES)
def test_cpu_and_cuda_agree(name: str) -> None:
    u, w, root = _data(n=15, d=2001)
    cpu = _run(name, u, w, root)
    gpu = _run(name, u.cuda(), w.cuda(), root.cuda())
    assert gpu.aggregate.is_cuda
    assert torch.equal(cpu.flags, gpu.flags)
    torch.testing.assert_close(cpu.weights, gpu.weights, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cpu.aggregate, gpu.aggregate.cpu(), rtol=1e-5, atol=1e-6)


# --- the fast kernels give the bits of the straightforward ones ------------------------------------------


def _awkward(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Many ties (values on a coarse grid), signed zeros, a duplicated client."""
    g = torch.Generator().manual_seed(seed)
    u = torch.round(torch.randn(n, d, generator=g, dtype=torch.float64) * 2) / 2
    u[u == 0] = torch.where(torch.rand(int((u == 0).sum()), generator=g) < 0.5, -0.0, 0.0).double()
    u[n - 1] = u[0]
    return u.to(dtype)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "bulyan"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [7, 10, 12])
def test_numpy_sort_path_equals_the_stable_sort_path(
    monkeypatch: pytest.MonkeyPatch, name: str, dtype: torch.dtype, n: int
) -> None:
    """The coordinate-wise rules sort values with numpy and count the kept clients by thresholds; on
    tie-heavy input (where the counts fall back to a stable sort) both must give the stable sort's bits."""
    from consortium.defense import order_stats

    u, w = _awkward(n, 1501, dtype, seed=n), torch.ones(n)
    p = DefenseParams(chunk_elems=97 * n, f=1 if name == "bulyan" else None, trim_ratio=0.2)
    fast = aggregate(name, u, w, params=p)
    monkeypatch.setattr(order_stats, "_fast_sort", lambda x: False)
    slow = aggregate(name, u, w, params=p)
    assert torch.equal(fast.aggregate, slow.aggregate)
    assert torch.equal(fast.aggregate.signbit(), slow.aggregate.signbit())
    assert torch.equal(fast.weights, slow.weights) and torch.equal(fast.flags, slow.flags)


def _screen_direct(x: torch.Tensor, last: torch.Tensor | None, min_norm: float, stale: float) -> dict:
    """The screen as first written: a float64 copy of everything, every figure exact."""
    x = x.double()
    norms = x.norm(dim=1)
    median = float(norms.median())
    last = None if last is None else last.double()
    last_norm = 0.0 if last is None else float(last.norm())
    out = {}
    for i in range(x.shape[0]):
        n = float(norms[i])
        if min_norm > 0 and n <= min_norm * median:
            out[i] = f"update norm {n:.3g} is at most {min_norm:g} x the median {median:.3g}"
        elif last is not None and last_norm > 0 and n > 0:
            cos = float(torch.dot(x[i], last) / (n * last_norm))
            if cos >= stale:
                out[i] = f"update replays the last global step (cosine {cos:.4f})"
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 9, 16])
def test_screen_equals_the_direct_computation(n: int) -> None:
    from consortium.defense.screen import screen

    g = torch.Generator().manual_seed(n)
    d = 40_001
    last = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g)
    if n >= 3:
        x[1] = 0.0  # empty
        x[2] = last * 0.5 + 0.01 * torch.randn(d, generator=g)  # a replay with a little noise
    if n >= 9:
        x[4] = x[3] * 0.05  # right at the norm threshold's scale
        x[5] = x[6]  # equal norms around the median
    for min_norm, stale in ((0.05, 0.99), (0.0, 2.0), (0.5, 0.5), (0.05, 0.99995)):
        for lst in (last, None, torch.zeros(d)):
            assert screen(x, lst, min_norm, stale) == _screen_direct(x, lst, min_norm, stale)
    # the cosine threshold set to an update's own exact cosine: the verdict must come from exact figures
    if n >= 3:
        exact_cos = float(
            torch.dot(x[2].double(), last.double()) / (x[2].double().norm() * last.double().norm())
        )
        for stale in (exact_cos, float(torch.nextafter(torch.tensor(exact_cos), torch.tensor(2.0)))):
            assert screen(x, last, 0.05, stale) == _screen_direct(x, last, 0.05, stale)
    bad = x.clone()
    bad[0, 7] = float("nan")
    assert screen(bad, last, 0.05, 0.99) == _screen_direct(bad, last, 0.05, 0.99)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_screen_bounds_hold_at_the_edges_of_float32(dtype: torch.dtype) -> None:
    """The screen's first pass (float32 for float32 updates) only bounds the figures; the verdicts must be
    the exact ones where that pass underflows (1e-30 entries: squares below float32's range), where norms
    differ by less than its interval (a cluster around the median, equal norms), and at thresholds set to
    an update's exact norm ratio and cosine."""
    g = torch.Generator().manual_seed(11)
    d = 30_011
    last = torch.randn(d, generator=g)
    x = torch.randn(12, d, generator=g)
    x[0] *= 1e-30  # underflows in float32 products
    x[1] = x[0] * 3.0
    for i in range(2, 8):  # norms within ~1e-7 of each other around the median
        x[i] = x[2] * (1 + i * 1e-7)
    x[8] = last * 2.0 + 1e-4 * torch.randn(d, generator=g)  # a near-replay
    x[9] = last * 1e-30  # a replay too small for float32 products
    x = x.to(dtype)
    xd = x.double()
    norms = xd.norm(dim=1)
    median = float(norms.median())
    ratio = float(norms[3]) / median
    cos8 = float(torch.dot(xd[8], last.double()) / (norms[8] * last.double().norm()))
    for min_norm, stale in ((0.05, 0.99), (ratio, 0.99), (0.05, cos8), (0.05, 0.999999), (0.5, 0.5)):
        assert screen_fn(x, last, min_norm, stale) == _screen_direct(x, last, min_norm, stale)


def screen_fn(x: torch.Tensor, last: torch.Tensor, min_norm: float, stale: float) -> dict:
    from consortium.defense.screen import screen

    return screen(x, last, min_norm, stale)
