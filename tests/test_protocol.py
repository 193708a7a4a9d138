"""Round protocol: candidates are a pure function of the records; bad blobs and replays are refused."""

from pathlib import Path

import pytest
import torch

from consortium.defense import DefenseParams
from consortium.model import LoraSpec, attach, layout, load_base
from consortium.protocol import MemoryLedger, RoundRunner
from consortium.round.pipeline import AggregationRule, compute_candidate
from consortium.round.records import Commitment, ProtocolError, get_vector, put_vector
from consortium.store import BlobStore, IntegrityError

SPEC = LoraSpec(variant="ffa", r=4, alpha=8.0)
SAMPLES = AggregationRule("fedavg", "samples")
UNIFORM = AggregationRule("fedavg", "uniform")


@pytest.fixture(scope="module")
def lay():
    model, _ = load_base("tiny")
    return layout(attach(model, SPEC), SPEC)


def _vec(lay, seed: int) -> torch.Tensor:
    n = sum(torch.Size(s).numel() for _, s in lay)
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_candidate_is_global_plus_weighted_mean_and_recomputes_bit_identically(tmp_path: Path, lay) -> None:
    store = BlobStore(tmp_path)
    g = put_vector(store, _vec(lay, 0), lay)
    deltas = [_vec(lay, i) for i in (1, 2, 3)]
    commits = [
        Commitment(f"org{i}", put_vector(store, d, lay), n)
        for i, (d, n) in enumerate(zip(deltas, (1, 1, 2), strict=True))
    ]
    cand = compute_candidate(store, lay, g, commits, SAMPLES).vector
    expected = get_vector(store, g, lay) + (deltas[0] + deltas[1] + 2 * deltas[2]) / 4
    torch.testing.assert_close(cand, expected, rtol=0, atol=1e-6)
    again = compute_candidate(store, lay, g, list(reversed(commits)), SAMPLES).vector
    assert put_vector(store, again, lay) == put_vector(store, cand, lay)  # same bytes, same hash
    uniform = compute_candidate(store, lay, g, commits, UNIFORM).vector
    torch.testing.assert_close(uniform, get_vector(store, g, lay) + sum(deltas) / 3, rtol=0, atol=1e-6)


def test_wrong_shape_dtype_and_tampering_refused(tmp_path: Path, lay) -> None:
    store = BlobStore(tmp_path)
    g = put_vector(store, _vec(lay, 0), lay)
    name, _ = lay[0]
    wrong_shape = store.put_tensors({name: torch.zeros(3)})
    with pytest.raises(ProtocolError, match=f"update from 'org0': blob {wrong_shape}"):
        compute_candidate(store, lay, g, [Commitment("org0", wrong_shape, 1)], SAMPLES)
    state = {n: torch.zeros(s, dtype=torch.float64) for n, s in lay}
    wrong_dtype = store.put_tensors(state)
    with pytest.raises(ProtocolError, match=r"torch\.float64, expected torch\.float32"):
        get_vector(store, wrong_dtype, lay)
    good = put_vector(store, _vec(lay, 5), lay)
    path = tmp_path / good[:2] / good
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        compute_candidate(store, lay, g, [Commitment("org0", good, 1)], SAMPLES)


def test_ledger_refuses_double_commit_and_open_round(tmp_path: Path) -> None:
    ledger = MemoryLedger()
    rnd = ledger.open_round("a" * 64)
    ledger.commit(rnd, Commitment("org0", "b" * 64, 1))
    with pytest.raises(ProtocolError, match="org0 already committed"):
        ledger.commit(rnd, Commitment("org0", "c" * 64, 1))
    with pytest.raises(ProtocolError, match="still open"):
        ledger.open_round("a" * 64)
    with pytest.raises(ProtocolError, match="no candidate"):
        ledger.finalize(rnd)


def test_round_runner_moves_the_global(tmp_path: Path, lay) -> None:
    store = BlobStore(tmp_path)
    start = _vec(lay, 0)
    g = put_vector(store, start, lay)
    runner = RoundRunner(MemoryLedger(), store, lay, UNIFORM)
    deltas = {"org0": _vec(lay, 1), "org1": _vec(lay, 2)}
    rec, cand = runner.run_round(g, ["org1", "org0"], lambda pid, vec: (deltas[pid], 10))
    assert cand.flagged == [] and cand.clients == ["org0", "org1"]
    assert rec.accepted and rec.global_out == rec.candidate != g
    torch.testing.assert_close(
        get_vector(store, rec.global_out, lay), start + (deltas["org0"] + deltas["org1"]) / 2
    )


def test_server_lr_scales_the_aggregate_step(tmp_path: Path, lay) -> None:
    store = BlobStore(tmp_path)
    start = _vec(lay, 0)
    g = put_vector(store, start, lay)
    deltas = [_vec(lay, 1), _vec(lay, 2)]
    commits = [Commitment(f"org{i}", put_vector(store, d, lay), 1) for i, d in enumerate(deltas)]
    cand = compute_candidate(store, lay, g, commits, AggregationRule("fedavg", "uniform", 2.5)).vector
    torch.testing.assert_close(cand, start + 2.5 * (deltas[0] + deltas[1]) / 2, rtol=0, atol=1e-5)


def test_robust_rule_flags_the_outlier_and_its_record_says_so(tmp_path: Path, lay) -> None:
    store = BlobStore(tmp_path)
    start = _vec(lay, 0)
    g = put_vector(store, start, lay)
    honest = _vec(lay, 1) * 0.01
    deltas = {f"org{i}": honest + _vec(lay, 10 + i) * 1e-4 for i in range(5)}
    deltas["org5"] = _vec(lay, 99) * 10.0  # far away from everyone
    rule = AggregationRule("multi_krum", "uniform", params=DefenseParams(f=1))
    rec, cand = RoundRunner(MemoryLedger(), store, lay, rule).run_round(
        g, sorted(deltas), lambda p, v: (deltas[p], 1)
    )
    assert rec.flagged == cand.flagged == ["org5"]
    assert cand.summary()["weights"]["org5"] == 0.0 and cand.seconds >= 0
    kept = sum(deltas[f"org{i}"] for i in range(5)) / 5
    torch.testing.assert_close(get_vector(store, rec.global_out, lay), start + kept, rtol=0, atol=1e-6)


def test_fltrust_round_commits_its_root_update_and_foolsgold_keeps_history(tmp_path: Path, lay) -> None:
    store = BlobStore(tmp_path)
    g = put_vector(store, _vec(lay, 0), lay)
    deltas = {"org0": _vec(lay, 1), "org1": -_vec(lay, 1), "org2": _vec(lay, 1) + 0.1 * _vec(lay, 2)}
    root = _vec(lay, 1)
    with pytest.raises(ProtocolError, match="root update"):
        RoundRunner(MemoryLedger(), store, lay, AggregationRule("fltrust")).run_round(
            g, sorted(deltas), lambda p, v: (deltas[p], 1)
        )
    runner = RoundRunner(MemoryLedger(), store, lay, AggregationRule("fltrust"), root=lambda r, v: root)
    rec, cand = runner.run_round(g, sorted(deltas), lambda p, v: (deltas[p], 1))
    assert rec.root is not None and torch.equal(get_vector(store, rec.root, lay), root)
    assert cand.flagged == ["org1"]  # points against the root update
    again = compute_candidate(
        store, lay, g, rec.commitments, AggregationRule("fltrust"), seed=rec.seed, root=rec.root
    )
    assert torch.equal(again.vector, get_vector(store, rec.global_out, lay))
    fg = RoundRunner(MemoryLedger(), store, lay, AggregationRule("foolsgold"))
    fg.run_round(g, sorted(deltas), lambda p, v: (deltas[p], 1))
    assert torch.equal(fg.public.sums["org1"], deltas["org1"])


def test_nan_update_is_refused_naming_the_participant(tmp_path: Path, lay) -> None:
    store = BlobStore(tmp_path)
    g = put_vector(store, _vec(lay, 0), lay)
    state = {name: torch.zeros(shape) for name, shape in lay}
    first = lay[0][0]
    state[first].view(-1)[0] = float(
        "inf"
    )  # a participant can publish any bytes, not only what put_vector allows
    commits = [
        Commitment("org0", put_vector(store, _vec(lay, 2), lay), 1),
        Commitment("org1", store.put_tensors(state), 1),
    ]
    with pytest.raises(ValueError, match=r"org1.*(NaN|Inf)"):
        compute_candidate(store, lay, g, commits, SAMPLES)
