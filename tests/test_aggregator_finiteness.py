"""Finiteness settled inside the rules' own passes (`consortium.defense.finite`): every non-finite update is
still refused, naming the first bad client, with the same precedence over other errors as a check made
before everything else; clean input costs no separate pass; results are those of the rule alone."""

from __future__ import annotations

import pytest
import torch

from consortium.defense import AGGREGATORS, DefenseParams, RuleContext, UpdateError, aggregate
from consortium.defense import finite as finite_mod

RULES = sorted(AGGREGATORS)
NAMES = [f"org{i}" for i in range(9)]


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    u = torch.randn(9, 301, generator=g, dtype=torch.float64).to(dtype)
    w = torch.rand(9, generator=g, dtype=torch.float64) + 0.5
    root = u[2:].double().mean(0).to(dtype)
    return u, w, root


def _run(name: str, u: torch.Tensor, w: torch.Tensor, root: torch.Tensor, **kw):
    params = kw.pop("params", DefenseParams(chunk_elems=1000, f=1))
    return aggregate(name, u, w, params=params, clients=NAMES, root_update=root, seed=5, **kw)


@pytest.mark.parametrize("name", RULES)
def test_a_bad_row_that_the_rule_leaves_out_is_still_refused(name: str) -> None:
    """Zero weight: skipped by every weighted sum, so no pass covers it; it must be checked on its own."""
    u, w, root = _inputs()
    u[4, 300] = float("nan")
    w[4] = 0.0
    with pytest.raises(UpdateError, match="update from 'org4': contains NaN or Inf"):
        _run(name, u, w, root)


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_the_first_bad_client_is_named(name: str, bad: float) -> None:
    u, w, root = _inputs()
    u[6, 0] = bad
    u[3, 150] = bad
    with pytest.raises(UpdateError, match="update from 'org3': contains NaN or Inf"):
        _run(name, u, w, root)


@pytest.mark.parametrize("name", RULES)
def test_a_bad_update_is_named_before_any_other_error(name: str) -> None:
    """Bad weights, a bad root update, a bad history or a parameter the rule refuses: the NaN comes first,
    as when the updates were checked before everything else."""
    u, w, root = _inputs()
    u[7, 10] = float("nan")
    msg = "update from 'org7': contains NaN or Inf"
    bad_w = w.clone()
    bad_w[1] = -1.0
    with pytest.raises(UpdateError, match=msg):
        _run(name, u, bad_w, root)
    with pytest.raises(UpdateError, match=msg):
        _run(name, u, w, torch.full_like(root, float("nan")))
    hist = torch.ones_like(u)
    hist[0, 0] = float("inf")
    with pytest.raises(UpdateError, match=msg):
        _run(name, u, w, root, history=hist)
    too_big = DefenseParams(f=50, multi_krum_m=50, rlr_threshold=50, flame_min_cluster_size=50)
    with pytest.raises(UpdateError, match=msg):
        _run(name, u, w, root, params=too_big)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


@pytest.mark.parametrize("name", RULES)
def test_finite_values_whose_squares_overflow_are_accepted(name: str) -> None:
    """float64 updates of 1e200: every float64 pass overflows, which sends the rows through the entry-by-entry
    check; they are finite, so the rule's result stands, the same as calling the rule directly."""
    u, w, root = _inputs(torch.float64)
    u[5] *= 1e200
    params = DefenseParams(chunk_elems=1000, f=1)
    ctx = RuleContext(params=params, clients=tuple(NAMES), seed=5, root_update=root)
    try:
        direct = AGGREGATORS[name](u, w, ctx)
    except Exception as err:  # the rule itself cannot handle it: the same error, not an UpdateError
        with pytest.raises(type(err)) as got:
            _run(name, u, w, root, params=params)
        assert not isinstance(got.value, UpdateError)
        return
    result = _run(name, u, w, root, params=params)
    assert torch.equal(_bits(result.aggregate), _bits(direct.aggregate))
    assert torch.equal(result.flags, direct.flags)


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_clean_input_needs_no_pass_of_its_own(monkeypatch: pytest.MonkeyPatch, name: str, dtype) -> None:
    """Every rule's own pass settles finiteness: the separate whole-input check is never run on clean
    input (and the result is the rule's own, bit for bit)."""
    u, w, root = _inputs(dtype)
    params = DefenseParams(chunk_elems=1000, f=1)
    ctx = RuleContext(params=params, clients=tuple(NAMES), seed=5, root_update=root)
    direct = AGGREGATORS[name](u, w, ctx)

    def forbidden(*_: object) -> torch.Tensor:
        raise AssertionError("a separate finiteness pass ran on clean input")

    monkeypatch.setattr(finite_mod, "finite_rows", forbidden)
    result = _run(name, u, w, root, params=params)
    assert torch.equal(_bits(result.aggregate.float()), _bits(direct.aggregate.float()))
    assert torch.equal(result.weights, direct.weights) and torch.equal(result.flags, direct.flags)
