"""The flora and fedsb LoRA variants: exact aggregation against brute-force product sums, Fed-SB's r×r
training and standard PEFT export, FLoRA's rank-r projection, bytes on the wire, and end-to-end runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from rich.console import Console
from safetensors.torch import load_file

from consortium.aggregate_lora import FLORA_AGGREGATORS, flora_candidate, product_terms, stacked_factors
from consortium.audit import audit_run
from consortium.config import ConfigError, load_config
from consortium.model import (
    LoraSpec,
    adapted_modules,
    attach,
    effective_delta,
    export_peft,
    full_state,
    get_flat,
    layout,
    layout_size,
    load_base,
    set_flat,
)
from consortium.round.pipeline import AggregationRule, compute_candidate, rule_from_config
from consortium.round.records import Commitment, ProtocolError, put_vector
from consortium.sim import Simulation
from consortium.store import BlobStore, sha256_hex, tensors_to_bytes
from consortium.train import collate, response_loss

PROMPT = "<|im_start|>user\nhello federated world<|im_end|>\n"


def tiny(spec: LoraSpec):
    model, tok = load_base("tiny", seed=0)
    return attach(model, spec), tok


def rand(shape: int | tuple[int, ...], seed: int, scale: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


def a0_of(peft_model, module: str) -> torch.Tensor:
    return peft_model.get_submodule(module).lora_A["default"].parametrizations.weight[0].a0


# --- fedsb ---------------------------------------------------------------------------------------------


def test_fedsb_trains_and_sends_only_r_squared_per_module():
    spec = LoraSpec(variant="fedsb", r=4, alpha=8.0)
    pm, _ = tiny(spec)
    modules = adapted_modules(pm)
    lay = layout(pm, spec)
    assert [k for k, _ in lay] == [f"{m}.lora_R.weight" for m in modules]
    assert all(shape == (4, 4) for _, shape in lay)
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert trainable == layout_size(lay) == len(modules) * 4 * 4
    # the model starts at the base (R = 0) with fixed orthonormal factors, the same for the same seed
    assert not get_flat(pm, spec).any()
    state = full_state(pm)
    for m in modules:
        a0, b0 = a0_of(pm, m), state[f"{m}.lora_B.weight"]
        torch.testing.assert_close(a0 @ a0.T, torch.eye(4), atol=1e-6, rtol=0)
        torch.testing.assert_close(b0.T @ b0, torch.eye(4), atol=1e-6, rtol=0)
    again, _ = tiny(spec)
    other, _ = tiny(LoraSpec(variant="fedsb", r=4, alpha=8.0, seed=1))
    m = modules[0]
    assert torch.equal(a0_of(again, m), a0_of(pm, m))
    assert not torch.equal(a0_of(other, m), a0_of(pm, m))


def test_fedsb_gradient_reaches_r_and_only_r():
    spec = LoraSpec(variant="fedsb")
    pm, tok = tiny(spec)
    ids = tok(PROMPT)["input_ids"]
    from consortium.data import EncodedExample

    ex = EncodedExample(input_ids=ids, labels=[-100] * 4 + ids[4:])
    response_loss(pm, collate([ex], tok.pad_token_id)).backward()
    grads = {n: p.grad for n, p in pm.named_parameters() if p.grad is not None}
    assert grads and all("parametrizations.weight.original" in n for n in grads)
    assert len(grads) == len(adapted_modules(pm))
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_fedsb_averaging_r_is_exactly_b0_avg_r_a0():
    spec = LoraSpec(variant="fedsb", r=4, alpha=8.0)
    pm, _ = tiny(spec)
    n = layout_size(layout(pm, spec))
    modules = adapted_modules(pm)
    clients = [rand(n, 30 + k, scale=0.5) for k in range(3)]
    w = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64) / 8.0
    deltas = []
    for vec in clients:
        set_flat(pm, spec, vec)
        deltas.append({m: pm.get_submodule(m).get_delta_weight("default").detach() for m in modules})
    avg = sum(float(wk) * v.double() for wk, v in zip(w, clients, strict=True)).float()
    set_flat(pm, spec, avg)
    b0s = {m: full_state(pm)[f"{m}.lora_B.weight"].double() for m in modules}
    for i, m in enumerate(modules):
        want = sum(float(wk) * d[m].double() for wk, d in zip(w, deltas, strict=True))
        assert want.abs().max() > 1e-2
        r_avg = avg[i * 16 : (i + 1) * 16].reshape(4, 4).double()
        brute = spec.scaling * b0s[m] @ r_avg @ a0_of(pm, m).double()
        torch.testing.assert_close(brute, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(effective_delta(pm, spec, m).double(), want, atol=1e-6, rtol=0)


def test_fedsb_exports_a_standard_adapter_with_the_same_outputs(tmp_path: Path):
    spec = LoraSpec(variant="fedsb", seed=3)
    pm, tok = tiny(spec)
    set_flat(pm, spec, rand(layout_size(layout(pm, spec)), 6, scale=0.5))
    ids = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        want = pm(**ids).logits
    base, _ = load_base("tiny", seed=0)
    with torch.no_grad():
        assert not torch.allclose(base(**ids).logits, want), "the adapter must change the outputs"
    out = export_peft(pm, tmp_path / "global")
    saved = load_file(out / "adapter_model.safetensors")
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in saved)
    assert len(saved) == 2 * len(adapted_modules(pm))
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    reloaded = PeftModel.from_pretrained(base, out)
    with torch.no_grad():
        got = reloaded(**ids).logits
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # the live model is untouched: still Fed-SB, still the same vector
    assert get_flat(pm, spec).numel() == layout_size(layout(pm, spec))


# --- flora ---------------------------------------------------------------------------------------------

LAYOUT = [  # two modules, sorted names, shapes as PEFT's (A: r × in, B: out × r)
    ("m0.lora_A.weight", (3, 12)),
    ("m0.lora_B.weight", (10, 3)),
    ("m1.lora_A.weight", (3, 7)),
    ("m1.lora_B.weight", (9, 3)),
]


def _split(vec: torch.Tensor) -> dict[str, np.ndarray]:
    out, at = {}, 0
    for k, shape in LAYOUT:
        n = math.prod(shape)
        out[k] = vec[at : at + n].reshape(shape).double().numpy()
        at += n
    return out


def _brute_product_sum(global_vec, deltas, w, lr) -> dict[str, np.ndarray]:
    """W_g + lr Σ_k w_k (B_k A_k - W_g) per module, in float64 numpy, independently of aggregate_lora."""
    g = _split(global_vec)
    out = {}
    for m in ("m0", "m1"):
        wg = g[f"{m}.lora_B.weight"] @ g[f"{m}.lora_A.weight"]
        acc = wg.copy()
        for wk, d in zip(w, deltas, strict=True):
            c = _split(global_vec + d)
            acc += lr * wk * (c[f"{m}.lora_B.weight"] @ c[f"{m}.lora_A.weight"] - wg)
        out[m] = acc
    return out


def _setup(tmp_path: Path, n: int = 4, seed: int = 0):
    d = sum(math.prod(s) for _, s in LAYOUT)
    store = BlobStore(tmp_path / "store")
    global_vec = rand(d, seed, scale=0.5)
    deltas = [rand(d, seed + 1 + k, scale=0.3) for k in range(n)]
    g = put_vector(store, global_vec, LAYOUT)
    commits = [Commitment(f"org{k}", put_vector(store, deltas[k], LAYOUT), 10 * (k + 1)) for k in range(n)]
    return store, global_vec, deltas, g, commits


def test_flora_stacked_product_sum_is_exact(tmp_path: Path):
    _, global_vec, deltas, _, _ = _setup(tmp_path)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    vecs, coefs = product_terms(global_vec, torch.stack(deltas), w, 1.7)
    want = _brute_product_sum(global_vec, deltas, w.tolist(), 1.7)
    at = {
        "m0": (slice(0, 36), (3, 12), slice(36, 66), (10, 3)),
        "m1": (slice(66, 87), (3, 7), slice(87, 114), (9, 3)),
    }
    for m, (sa, ash, sb, bsh) in at.items():
        b_s, a_s = stacked_factors(vecs, coefs, sa, ash, sb, bsh)
        assert b_s.shape[1] == 3 * 5  # the global's block plus one per participant, rank 3 each
        np.testing.assert_allclose((b_s @ a_s).numpy(), want[m], rtol=0, atol=1e-12)


@pytest.mark.parametrize("server_lr", [1.0, 1.5])
def test_flora_candidate_is_the_best_rank_r_approximation(tmp_path: Path, server_lr: float):
    store, global_vec, deltas, g, commits = _setup(tmp_path)
    rule = AggregationRule("fedavg", "samples", server_lr, variant="flora")
    cand = compute_candidate(store, LAYOUT, g, commits, rule)
    w = [c.n_examples / 100 for c in commits]
    want = _brute_product_sum(global_vec, deltas, w, server_lr)
    got = _split(cand.vector)
    err2 = total2 = 0.0
    for m, wm in want.items():
        u, s, vt = np.linalg.svd(wm)
        best = (u[:, :3] * s[:3]) @ vt[:3]
        a, b = got[f"{m}.lora_A.weight"], got[f"{m}.lora_B.weight"]
        np.testing.assert_allclose(b @ a, best, rtol=0, atol=2e-5 * s[0])
        np.testing.assert_allclose(a @ a.T, np.eye(3), rtol=0, atol=1e-6)  # A' = V_rᵀ, orthonormal rows
        assert s[3] > 1e-2 * s[0], "the test needs a sum of rank > r"
        err2 += float((s[3:] ** 2).sum())
        total2 += float((s**2).sum())
    info = cand.result.info["flora"]
    assert info["projection_error"] == pytest.approx(math.sqrt(err2), rel=1e-9)
    assert info["projection_relative_error"] == pytest.approx(math.sqrt(err2 / total2), rel=1e-9)
    # a pure function of the records: recomputed, bit for bit the same blob
    again = compute_candidate(store, LAYOUT, g, commits, rule)
    blob = lambda v: sha256_hex(tensors_to_bytes(_state(v)))  # noqa: E731
    assert blob(again.vector) == blob(cand.vector)


def _state(vec: torch.Tensor) -> dict[str, torch.Tensor]:
    from consortium.model import flat_to_state

    return flat_to_state(vec, LAYOUT)


def test_flora_with_krum_takes_the_selected_participants_product(tmp_path: Path):
    store, global_vec, deltas, g, commits = _setup(tmp_path, n=5, seed=7)
    rule = AggregationRule("krum", variant="flora")
    cand = compute_candidate(store, LAYOUT, g, commits, rule)
    (sel,) = cand.result.info["selected"]
    chosen = _split(global_vec + deltas[sel])
    got = _split(cand.vector)
    for m in ("m0", "m1"):
        want = chosen[f"{m}.lora_B.weight"] @ chosen[f"{m}.lora_A.weight"]
        np.testing.assert_allclose(got[f"{m}.lora_B.weight"] @ got[f"{m}.lora_A.weight"], want, atol=1e-5)
    assert cand.result.info["flora"]["projection_relative_error"] < 1e-6  # rank r already: no loss


def test_flora_keeps_the_global_when_no_one_is_weighted(tmp_path: Path):
    _, global_vec, deltas, _, _ = _setup(tmp_path)
    zero = torch.zeros(4, dtype=torch.float64)
    vec, info = flora_candidate(LAYOUT, global_vec, torch.stack(deltas), zero, 1.0)
    assert torch.equal(vec, global_vec) and info["projected"] is False


def test_flora_refuses_rules_that_are_not_weighted_means(tmp_path: Path):
    assert "median" not in FLORA_AGGREGATORS
    with pytest.raises(ConfigError, match=r"flora.*'median'"):
        load_config(preset="smoke", overrides=["lora.variant=flora", "aggregator=median"])
    store, _, _, g, commits = _setup(tmp_path)
    with pytest.raises(ProtocolError, match=r"flora.*'trimmed_mean'"):
        compute_candidate(store, LAYOUT, g, commits, AggregationRule("trimmed_mean", variant="flora"))
    bad = [("m0.lora_A.weight", (3, 12)), ("m0.lora_B.weight", (10, 4))]
    with pytest.raises(ProtocolError, match="not \\(r, in\\) and \\(out, r\\)"):
        vec = torch.zeros(76)
        s2 = BlobStore(tmp_path / "s2")
        compute_candidate(
            s2,
            bad,
            put_vector(s2, vec, bad),
            [Commitment("a", put_vector(s2, vec + 1, bad), 1)],
            AggregationRule(variant="flora"),
        )


def test_rule_from_config_carries_the_variant():
    cfg = load_config(preset="smoke", overrides=["lora.variant=flora", "server_lr=2.0"])
    rule = rule_from_config(cfg)
    assert (rule.variant, rule.aggregator, rule.server_lr) == ("flora", "fedavg", 2.0)


# --- end to end ----------------------------------------------------------------------------------------

FAST = ["data.n_train=16", "data.n_test=2", "eval.isolated_baseline=false", "train.local_steps=2"]


def _run(tmp: Path, overrides: list[str]) -> tuple[Path, dict]:
    cfg = load_config(preset="smoke", overrides=FAST + overrides)
    path = Simulation(cfg, Console(quiet=True)).run(tmp, plots=False)
    return path, json.loads((path / "report.json").read_text())


@pytest.mark.parametrize("variant", ["flora", "fedsb"])
def test_two_fedavg_rounds_finish_with_finite_loss_and_report_bytes(tmp_path: Path, variant: str):
    path, report = _run(tmp_path, ["protocol=central", f"lora.variant={variant}", "train.lr=2e-2"])
    assert report["status"] == "complete" and report["rounds_completed"] == 2
    losses = [x for v in report["losses"]["federated"].values() for x in v]
    assert losses and all(math.isfinite(x) for x in losses)
    n_modules, r = 2 * 2, 4  # tiny: 2 layers × (q_proj, v_proj), smoke r = 4
    per_module = r * r if variant == "fedsb" else r * 64 + 64 * r
    assert report["bytes"]["trainable_params"] == n_modules * per_module
    assert report["bytes"]["payload_per_participant_per_round"] == 4 * n_modules * per_module
    for rnd in report["rounds_detail"]:
        wire = rnd["bytes"]
        assert wire["uploaders"] == 4 and wire["upload_total"] == 4 * wire["upload_per_participant"]
        assert wire["upload_per_participant"] > wire["payload_per_participant"]  # + safetensors header
        if variant == "flora":
            assert rnd["info"]["flora"]["projected"] and rnd["info"]["flora"]["projection_error"] >= 0
    assert report["global_adapter"] != report["rounds_detail"][0]["global_in"]
    assert (path / "adapter" / "adapter_model.safetensors").is_file()


def test_flora_chain_run_passes_the_audit(tmp_path: Path):
    path, report = _run(tmp_path, ["lora.variant=flora", "participants=4", "train.lr=2e-2"])
    assert report["status"] == "complete"
    assert all(r["outcome"] == "accepted" for r in report["rounds_detail"])
    assert all(r["info"]["flora"]["projected"] for r in report["rounds_detail"])
    result = audit_run(path)
    assert result.ok, result.problems
    assert result.checked["candidates recomputed"] == 2
