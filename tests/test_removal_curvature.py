"""FedRecover's L-BFGS estimate (`consortium.removal.curvature`) on small vectors with known answers."""

import torch

from consortium.removal.curvature import Curvature


def _vec(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


def test_no_pair_no_correction() -> None:
    rec = _vec(1.0, 2.0, 3.0)
    assert torch.equal(Curvature().estimate("a", rec, _vec(0.5, 0.0, 0.0)), rec)


def test_one_pair_gives_the_secant_and_scales_along_it() -> None:
    """Along s the estimate moves by exactly y (the secant equation B s = y), and by c y along c s."""
    curv = Curvature()
    s, y = _vec(1.0, 0.0, 0.0, 0.0), _vec(-0.2, 0.1, 0.0, 0.0)
    curv.observe("a", s, y)
    rec = _vec(0.0, 0.0, 3.0, 4.0)  # length 5: the cap is not reached
    assert torch.allclose(curv.estimate("a", rec, s), rec + y, atol=1e-7)
    assert torch.allclose(curv.estimate("a", rec, 0.5 * s), rec + 0.5 * y, atol=1e-7)
    assert torch.equal(curv.estimate("b", rec, s), rec)  # another participant's pairs are not its own


def test_two_pairs_of_a_symmetric_map_keep_the_latest_secant() -> None:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    jac = q @ torch.diag(torch.tensor([-0.5, -0.3, -0.2, -0.1, -0.05, -0.4], dtype=torch.float64)) @ q.T
    s1, s2 = (q[:, 0] + 0.3 * q[:, 1]).float(), q[:, 1].float()  # not conjugate: only the latest is exact
    curv = Curvature()
    for s in (s1, s2):
        curv.observe("a", s, (jac @ s.double()).float())
    rec = torch.full((6,), 10.0)
    got = curv.estimate("a", rec, s2) - rec
    assert torch.allclose(got, (jac @ s2.double()).float(), atol=1e-5)


def test_the_correction_is_capped_at_the_recorded_updates_length() -> None:
    curv = Curvature()
    s, y = _vec(1.0, 0.0), _vec(-100.0, 0.0)
    curv.observe("a", s, y)
    rec = _vec(0.0, 1.0)
    got = curv.estimate("a", rec, s) - rec
    assert torch.allclose(got, _vec(-1.0, 0.0), atol=1e-6)  # direction of y, length of rec


def test_a_pair_without_curvature_is_skipped_and_the_buffer_keeps_the_latest() -> None:
    curv = Curvature(buffer=2)
    curv.observe("a", _vec(1.0, 0.0), _vec(0.0, 1.0))  # s . y = 0: nothing to invert
    assert "a" not in curv.pairs
    for k in (1.0, 2.0, 3.0):
        curv.observe("a", _vec(k, 0.0), _vec(-k, 0.0))
    assert [float(s[0]) for s, _ in curv.pairs["a"]] == [2.0, 3.0]


def test_the_estimate_is_bit_identical_whatever_the_thread_count() -> None:
    torch.manual_seed(1)
    d = 300_000
    curv = Curvature()
    for _ in range(2):
        s = torch.randn(d)
        curv.observe("a", s, -0.3 * s + 0.01 * torch.randn(d))
    rec, v = torch.randn(d), torch.randn(d)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = curv.estimate("a", rec, v)
        torch.set_num_threads(2)
        two = curv.estimate("a", rec, v)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
