"""CPU speed paths (docs/speed.md): bf16 autocast, adapters on chosen layers, the frozen-prefix cache."""

import pytest
import torch

from consortium.config import ConfigError, load_config
from consortium.data import build_corpus, encode_example
from consortium.evaluate import heldout_loss, teacher_forced_verdicts
from consortium.model import LoraSpec, attach, get_flat, load_base, set_flat
from consortium.model.lora import layer_indices
from consortium.model.prefix import (
    PrefixCache,
    PrefixCacheMismatch,
    PrefixKey,
    adapted_layers,
    disable_prefix_cache,
    enable_prefix_cache,
    prefix_runner,
)
from consortium.model.tiny import build_tiny_llama, build_tiny_tokenizer
from consortium.packing import collate_packed
from consortium.train import LocalTrainer, TrainParams, collate, prepare_model, response_loss, speed_settings
from consortium.train_fast import autocast, bf16_native, resolve_precision

CPU = torch.device("cpu")
ALL7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _examples(tok, n=10, max_len=96):
    corpus = build_corpus(["arithmetic", "strings", "dates"], n, 4, seed=0)
    return [encode_example(tok, e, max_len) for e in corpus.train], corpus.test


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    model.train()
    loss = response_loss(model, batch)
    loss.backward()
    model.eval()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


# --- bf16 autocast -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    base, tok = load_base("tiny", seed=1)
    spec = LoraSpec(variant="lora", r=4, alpha=8.0, target_modules=ALL7)
    model = attach(base, spec)
    set_flat(
        model,
        spec,
        torch.randn(get_flat(model, spec).shape, generator=torch.Generator().manual_seed(0)) * 0.05,
    )
    encoded, _ = _examples(tok)
    return model, spec, tok, encoded


def test_precision_resolution() -> None:
    assert resolve_precision("fp32", False, CPU) == "fp32"
    assert resolve_precision("bf16", False, CPU) == "bf16"  # forced, even where it is emulated
    assert resolve_precision("auto", False, CPU) == ("bf16" if bf16_native(CPU) else "fp32")
    assert resolve_precision("fp32", True, CPU) == "fp32"  # the older flag stays CUDA-only
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", False, CPU)
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_config(preset="smoke", overrides=["train.precision=fp16"])


def test_bf16_step_loss_is_close_to_fp32_and_runs_in_bf16(tiny) -> None:
    """bf16 keeps 8 significant bits (unit roundoff u = 2^-9 ~ 2e-3). Autocast rounds each matmul's
    inputs once and accumulates in float32; the loss (~5.5 nats on this random tiny model) is a mean over
    many tokens, so rounding errors of order u per layer move it by ~1e-2 relative at most: rtol 2e-2
    (10 u) is loose enough for any CPU, and tight enough to catch a broken cast (e.g. the loss computed
    from bf16 logits of a wrong row, or fp16 overflow), which moves it by whole percent or to inf."""
    model, _, tok, encoded = tiny
    batch = collate(encoded[:8], tok.pad_token_id)
    ref, ref_grads = _loss_and_grads(model, batch)
    seen: list[torch.dtype] = []
    proj = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    hook = proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with autocast(CPU, True):
            got, got_grads = _loss_and_grads(model, batch)
    finally:
        hook.remove()
    assert seen == [torch.bfloat16]  # the frozen matmuls really ran in bf16
    assert got.dtype == torch.float32  # the cross-entropy is taken in float32
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=0.0)
    assert all(g.dtype == torch.float32 for g in got_grads)  # adapter gradients stay float32
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in got_grads]), torch.cat([g.flatten() for g in ref_grads]), dim=0
    )
    assert cos > 0.95  # same descent direction


def test_eager_attention_keeps_loss_and_gradients_and_is_recorded() -> None:
    """`train.attention = "eager"` (faster on CPU for short rows: docs/speed.md) computes the same
    softmax(QK^T)V in float32 as SDPA, padding mask included: the loss and the adapter gradients agree to
    float32 rounding, and the report's speed settings say which implementation ran."""
    base, tok = load_base("tiny", seed=1)
    spec = LoraSpec(variant="lora", r=4, alpha=8.0, target_modules=ALL7)
    model = attach(base, spec)
    set_flat(
        model, spec, torch.randn(get_flat(model, spec).shape, generator=torch.Generator().manual_seed(0))
    )
    encoded, _ = _examples(tok)
    batch = collate(encoded[:8], tok.pad_token_id)
    assert batch["attention_mask"].min() == 0  # rows of different lengths: the mask matters
    assert speed_settings(model, TrainParams(1, 1, 1.0))["attention"] == "sdpa"
    ref, ref_grads = _loss_and_grads(model, batch)
    prepare_model(model, TrainParams(1, 1, 1.0, attention="eager"))
    assert speed_settings(model, TrainParams(1, 1, 1.0))["attention"] == "eager"
    got, got_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    got_g, ref_g = torch.cat([g.flatten() for g in got_grads]), torch.cat([g.flatten() for g in ref_grads])
    # the two sum the softmax in different orders: float32 rounding (~1e-7 per op, summed over the layers)
    # moves single tiny elements by up to ~1e-3 relative, the gradient as a whole by far less than 1e-4
    assert (got_g - ref_g).norm() <= 1e-4 * ref_g.norm()
    with pytest.raises(ConfigError, match=r"train\.attention"):
        load_config(preset="smoke", overrides=["train.attention=flash"])


def test_bf16_training_learns_and_keeps_fp32_state(tiny) -> None:
    """30 steps on 4 examples: the loss falls by 0.45-0.7 nats in fp32 and in bf16 alike (at lr 0.1 the
    path follows the CPU's kernels: ~0.7 on the first machine, 0.45-0.49 on a Zen 4 one). We ask for 0.3,
    and for the two runs to end within 0.15 nats of each other (the rounding effect bounded above is
    ~0.1 nats at most): a bf16 path that failed to learn, or learned something else, fails."""
    model, spec, tok, encoded = tiny
    trainer = LocalTrainer(model, spec, tok.pad_token_id)
    start = get_flat(model, spec)
    runs = {}
    try:
        for precision in ("fp32", "bf16"):
            params = TrainParams(steps=30, batch_size=4, lr=1e-1, precision=precision)
            runs[precision] = trainer.train(start, encoded[:4], params, seed=1)
    finally:
        set_flat(model, spec, start)
    res, ref = runs["bf16"], runs["fp32"]
    assert res.precision == "bf16" and ref.precision == "fp32"
    assert res.delta.dtype == torch.float32 and bool(torch.isfinite(res.delta).all())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    first, last = sum(res.losses[:3]) / 3, sum(res.losses[-3:]) / 3
    assert last < first - 0.3
    assert abs(last - sum(ref.losses[-3:]) / 3) < 0.15
    settings = speed_settings(model, params)
    assert settings["precision"] == "bf16" and settings["threads"] == torch.get_num_threads()


# --- adapters on chosen layers -------------------------------------------------------------------


def test_layer_choice() -> None:
    assert layer_indices("all", 30) is None
    assert layer_indices("top:6", 30) == list(range(24, 30))
    assert layer_indices((3, 1), 30) == [1, 3]
    with pytest.raises(ValueError, match="more layers"):
        layer_indices("top:31", 30)
    with pytest.raises(ValueError, match="out of range"):
        layer_indices((0, 30), 30)
    for bad in ("top:0", "top", "bottom:2", (), (1, 1), (-1,), (True,)):
        with pytest.raises(ValueError, match=r"LoraSpec\.layers"):
            LoraSpec(layers=bad)
    with pytest.raises(ConfigError, match=r"lora\.layers"):
        load_config(preset="smoke", overrides=["lora.layers=top:0"])
    assert load_config(preset="smoke", overrides=["lora.layers=[2, 0]"]).lora.layers == (0, 2)


def test_top_k_adapts_only_the_top_layers() -> None:
    tok = build_tiny_tokenizer()
    spec = LoraSpec(variant="lora", r=2, alpha=4.0, target_modules=("q_proj", "v_proj"), layers="top:2")
    model = attach(build_tiny_llama(len(tok), seed=0, layers=4), spec)
    assert adapted_layers(model) == [2, 3]
    listed = attach(build_tiny_llama(len(tok), seed=0, layers=4), LoraSpec(layers=(0, 3)))
    assert adapted_layers(listed) == [0, 3]
    with pytest.raises(ValueError, match="more layers"):
        attach(build_tiny_llama(len(tok), seed=0, layers=4), LoraSpec(layers="top:5"))


# --- the frozen-prefix cache ---------------------------------------------------------------------


@pytest.fixture()
def deep():
    """A 4-layer tiny Llama (rotary embeddings, causal mask) with adapters on layers 2 and 3."""
    tok = build_tiny_tokenizer()
    spec = LoraSpec(variant="lora", r=4, alpha=8.0, target_modules=ALL7, layers="top:2")
    model = attach(build_tiny_llama(len(tok), seed=1, layers=4), spec)
    set_flat(
        model,
        spec,
        torch.randn(get_flat(model, spec).shape, generator=torch.Generator().manual_seed(0)) * 0.05,
    )
    encoded, test = _examples(tok)
    yield model, spec, tok, encoded, test
    disable_prefix_cache(model)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_prefix_cache_keeps_loss_and_gradients(deep, layout) -> None:
    """Layers 2-3 over cached states entering layer 2 = the whole model: same rotary positions, same
    padding/packing mask. Examples of different lengths, so padding and restarts are exercised."""
    model, _, tok, encoded, _ = deep
    batch = (
        collate(encoded[:7], tok.pad_token_id)
        if layout == "padded"
        else collate_packed(encoded[:7], tok.pad_token_id, budget=0)
    )
    assert len({len(e.input_ids) for e in encoded[:7]}) > 1
    ref, ref_grads = _loss_and_grads(model, batch)
    runner = enable_prefix_cache(model)
    assert runner.active and runner.layer == 2
    for _ in range(2):  # the first call fills the cache, the second reads it
        got, grads = _loss_and_grads(model, batch)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
        for a, b in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    stats = runner.stats()["caches"]["float32"]
    assert stats["hits"] >= 7 and stats["entries"] >= 7 and stats["bytes"] > 0


def test_prefix_cache_in_training_and_evaluation(deep) -> None:
    model, spec, tok, encoded, test = deep
    trainer = LocalTrainer(model, spec, tok.pad_token_id)
    start = get_flat(model, spec)
    params = TrainParams(steps=4, batch_size=6, lr=2e-2)
    ref = trainer.train(start, encoded, params, seed=3)
    set_flat(model, spec, start)
    ref_verdicts = teacher_forced_verdicts(model, tok, test, 5)
    ref_loss = heldout_loss(model, encoded[:9], tok.pad_token_id, 4)
    got = trainer.train(
        start, encoded, TrainParams(steps=4, batch_size=6, lr=2e-2, prefix_cache=True), seed=3
    )
    assert prefix_runner(model) is not None
    torch.testing.assert_close(torch.tensor(got.losses), torch.tensor(ref.losses), rtol=0, atol=1e-5)
    torch.testing.assert_close(got.delta, ref.delta, rtol=0, atol=1e-5)
    set_flat(model, spec, start)
    assert teacher_forced_verdicts(model, tok, test, 5) == ref_verdicts
    assert abs(heldout_loss(model, encoded[:9], tok.pad_token_id, 4) - ref_loss) <= 1e-5


def test_prefix_cache_refuses_a_mismatched_key() -> None:
    key = PrefixKey("abc", 24, "float32")
    cache = PrefixCache(key, 2**20)
    assert cache.put(key, b"ids", torch.zeros(3, 4))
    assert cache.get(key, b"ids") is not None
    for other in (
        PrefixKey("abd", 24, "float32"),
        PrefixKey("abc", 23, "float32"),
        PrefixKey("abc", 24, "bfloat16"),
    ):
        with pytest.raises(PrefixCacheMismatch):
            cache.get(other, b"ids")
        with pytest.raises(PrefixCacheMismatch):
            cache.put(other, b"ids2", torch.zeros(3, 4))


def test_prefix_cache_is_rebuilt_when_the_frozen_base_changes(deep) -> None:
    """Stale states are never served: writing a prefix weight changes the key, so the old cache goes."""
    model, _, tok, encoded, _ = deep
    batch = collate(encoded[:5], tok.pad_token_id)
    runner = enable_prefix_cache(model)
    _loss_and_grads(model, batch)
    old_key = runner.caches["float32"].key
    with torch.no_grad():
        model.get_base_model().model.layers[0].mlp.up_proj.weight.mul_(1.5)
    with torch.no_grad():
        ref = model(**batch).loss  # HF's own forward: never reads the cache
    got, _ = _loss_and_grads(model, batch)
    assert runner.caches["float32"].key != old_key
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_prefix_cache_budget_and_when_it_is_off(deep) -> None:
    model, _, tok, encoded, _ = deep
    batch = collate(encoded[:5], tok.pad_token_id)
    ref, _ = _loss_and_grads(model, batch)
    runner = enable_prefix_cache(model, budget_mb=0)  # nothing fits: every batch recomputes its prefix
    got, _ = _loss_and_grads(model, batch)
    assert runner.stats()["caches"]["float32"]["bytes"] == 0
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    tok2 = build_tiny_tokenizer()
    everywhere = attach(build_tiny_llama(len(tok2), seed=0, layers=2), LoraSpec())
    assert enable_prefix_cache(everywhere).active is False and prefix_runner(everywhere) is None
    assert "layer 0" in enable_prefix_cache(everywhere).reason
    other = attach(build_tiny_llama(len(tok2), seed=0, layers=4), LoraSpec(layers="top:1"))
    other.get_base_model().config.model_type = "gemma"  # scales inputs_embeds in its forward
    assert enable_prefix_cache(other).active is False and "not supported" in enable_prefix_cache(other).reason
