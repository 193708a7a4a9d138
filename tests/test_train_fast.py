"""Fast paths of local training: packing keeps the loss, gradients and attention boundaries of padded
batches; chunked loss, checkpointing and the optimizer/compile/bf16 switches fall back cleanly on CPU."""

import random

import pytest
import torch

from consortium.data import EncodedExample, build_corpus, encode_example
from consortium.model import LoraSpec, attach, get_flat, load_base, set_flat
from consortium.packing import IGNORE, collate_packed, pack_rows, segment_ids
from consortium.train import LocalTrainer, TrainParams, bucketed_batches, collate, response_loss
from consortium.train_fast import CompiledDecoder, make_optimizer

SPEC = LoraSpec(variant="lora", r=4, alpha=8.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


@pytest.fixture(scope="module")
def setup():
    base, tok = load_base("tiny", seed=1)
    model = attach(base, SPEC)
    # a non-zero adapter, so gradients flow into A as well as B
    vec = get_flat(model, SPEC)
    set_flat(model, SPEC, torch.randn(vec.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    corpus = build_corpus(["arithmetic", "strings", "dates"], 12, 2, seed=0)
    encoded = [encode_example(tok, e, 96) for e in corpus.train]
    return model, tok, encoded


def _loss_and_grads(model, batch, **kw) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    model.train()
    loss = response_loss(model, batch, **kw)
    loss.backward()
    model.eval()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_pack_rows_first_fit_and_errors() -> None:
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    assert pack_rows([5, 3, 4, 2], None) == [[0, 1, 2, 3]]
    assert pack_rows([9, 3], 4) == [[0], [1]]  # a budget below the longest example is raised to it
    rows = pack_rows([7, 1, 6, 2, 5, 3], 8)
    assert sorted(i for r in rows for i in r) == list(range(6)) and len(rows) == 3
    with pytest.raises(ValueError, match="no examples"):
        pack_rows([], 8)
    with pytest.raises(ValueError, match="at least one token"):
        pack_rows([3, 0], 8)


def test_collate_packed_layout(setup) -> None:
    _, tok, encoded = setup
    batch = encoded[:5]
    packed = collate_packed(batch, tok.pad_token_id, budget=200)
    ids, pos, labels = packed["input_ids"], packed["position_ids"], packed["labels"]
    assert "attention_mask" not in packed
    n_real = sum(len(e.input_ids) for e in batch)
    segs = segment_ids(pos)
    # every example appears whole, once, with positions 0..n-1 and its first label masked
    found = 0
    for r in range(ids.shape[0]):
        for s in segs[r].unique():
            where = (segs[r] == s).nonzero().flatten()
            seg_ids = ids[r, where].tolist()
            match = [e for e in batch if e.input_ids == seg_ids]
            if not match:  # the padding tail: pad tokens, no targets
                assert set(seg_ids) == {tok.pad_token_id} and (labels[r, where] == IGNORE).all()
                continue
            found += 1
            assert pos[r, where].tolist() == list(range(len(where)))
            assert labels[r, where].tolist() == [IGNORE, *match[0].labels[1:]]
    assert found == len(batch)
    assert int((ids != tok.pad_token_id).sum()) == n_real
    wide = collate_packed(batch, tok.pad_token_id, budget=200, pad_to_multiple=64)
    assert wide["input_ids"].shape[1] % 64 == 0


@pytest.mark.parametrize("budget", [0, 150, None])
def test_packed_loss_and_grads_equal_padded(setup, budget) -> None:
    """Same examples, float32: the mean response-token loss agrees to 1e-5 relative, gradients too."""
    model, tok, encoded = setup
    batch = encoded[:8]
    padded_loss, padded_grads = _loss_and_grads(model, collate(batch, tok.pad_token_id))
    packed = collate_packed(batch, tok.pad_token_id, budget=budget)
    assert packed["input_ids"].shape[0] < 8 or budget == 0
    packed_loss, packed_grads = _loss_and_grads(model, packed)
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=1e-6)
    assert any(g.abs().max() > 1e-4 for g in padded_grads)  # not a vacuous comparison
    for a, b in zip(packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_attention_blocks_cross_example(setup, attn) -> None:
    """Changing example 1's tokens leaves example 2's logits in the same row unchanged; without the
    position restarts (one plain causal sequence) they do change, so the test can fail."""
    model, tok, encoded = setup
    causal_lm = model.get_base_model()
    causal_lm.set_attn_implementation(attn)
    try:
        first, second = encoded[0], encoded[1]
        other = EncodedExample(
            [(t + 7) % 250 + 3 for t in first.input_ids[:-3]], [IGNORE] * (len(first.input_ids) - 3)
        )

        def logits_of_second(a: EncodedExample, packed: bool) -> torch.Tensor:
            row = collate_packed([a, second], tok.pad_token_id, budget=None)
            assert row["input_ids"].shape[0] == 1
            # use_cache=False matters: with a cache transformers ignores the position restarts
            inputs = {"input_ids": row["input_ids"], "use_cache": False}
            if packed:
                inputs["position_ids"] = row["position_ids"]
            start = (row["input_ids"][0] == torch.tensor(second.input_ids[0])).nonzero()
            n = len(a.input_ids)
            assert start.flatten().tolist().count(n) == 1
            with torch.no_grad():
                return causal_lm(**inputs).logits[0, n : n + len(second.input_ids)]

        alone = causal_lm(input_ids=torch.tensor([second.input_ids])).logits[0].detach()
        torch.testing.assert_close(logits_of_second(first, True), alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits_of_second(other, True), alone, rtol=1e-5, atol=1e-5)
        leaky = (logits_of_second(first, False) - logits_of_second(other, False)).abs().max()
        assert leaky > 1e-3
    finally:
        causal_lm.set_attn_implementation("sdpa")


def test_chunked_loss_and_checkpointing_match(setup) -> None:
    model, tok, encoded = setup
    batch = collate_packed(encoded[:8], tok.pad_token_id, budget=0)
    ref_loss, ref_grads = _loss_and_grads(model, batch)
    chunk_loss, chunk_grads = _loss_and_grads(model, batch, chunk=5)
    torch.testing.assert_close(chunk_loss, ref_loss, rtol=1e-6, atol=1e-6)
    for a, b in zip(chunk_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def _train(model, tok, encoded, **kw):
    trainer = LocalTrainer(model, SPEC, tok.pad_token_id)
    start = get_flat(model, SPEC)
    params = TrainParams(steps=4, batch_size=6, lr=2e-2, weight_decay=0.01, **kw)
    try:
        return trainer.train(start, encoded, params, seed=3)
    finally:
        set_flat(model, SPEC, start)


def test_trainer_fast_paths_fall_back_on_cpu(setup) -> None:
    """On CPU: compile and bf16 are skipped (bit-identical), foreach AdamW is bit-identical to the loop,
    packing, chunking and checkpointing change only rounding."""
    model, tok, encoded = setup
    ref = _train(model, tok, encoded, fused_optimizer=False)
    for kw in ({}, {"compile": True}, {"bf16": True}):
        got = _train(model, tok, encoded, **kw)
        assert torch.equal(got.delta, ref.delta) and got.losses == ref.losses, kw
    replay = bucketed_batches(encoded, 6, 4, random.Random(3))
    assert ref.tokens == sum(len(e.input_ids) for b in replay for e in b)
    fast = _train(
        model, tok, encoded, packing=True, loss_chunk=7, gradient_checkpointing=True, compile=True, bf16=True
    )
    assert fast.tokens == ref.tokens
    torch.testing.assert_close(torch.tensor(fast.losses), torch.tensor(ref.losses), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.delta, ref.delta, rtol=1e-3, atol=1e-6)
    assert not model.get_base_model().is_activation_checkpointing  # switched back off after training


def test_make_optimizer_picks_implementation() -> None:
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert make_optimizer(p, 1e-3, 0.0, True, torch.device("cpu")).defaults["foreach"] is True
    assert not make_optimizer(p, 1e-3, 0.0, False, torch.device("cpu")).defaults["foreach"]


def test_compile_failure_falls_back_to_eager(setup) -> None:
    """A backend that fails (no compiler, unsupported op) costs a warning, never the round."""
    model, tok, encoded = setup

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    decoder = model.get_base_model().get_decoder()
    dec = CompiledDecoder(decoder, torch.device("cpu"), enabled=True, backend=broken_backend)
    assert dec.active
    batch = collate_packed(encoded[:3], tok.pad_token_id, budget=None)
    with torch.no_grad():
        got = dec(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        want = decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    assert not dec.active and "no C++ compiler" in (dec.fell_back or "")
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)
    skipped = CompiledDecoder(decoder, torch.device("cpu"), enabled=True)
    assert not skipped.active  # inductor on CPU: skipped by design


@pytest.mark.slow
def test_compiled_packed_forward_matches_eager(setup) -> None:
    """Dynamo traces the packed forward (mask built from position_ids) without changing the loss."""
    model, tok, encoded = setup
    batch = collate_packed(encoded[:8], tok.pad_token_id, budget=0)
    dec = CompiledDecoder(model.get_base_model().get_decoder(), torch.device("cpu"), True, "aot_eager")
    ref_loss, ref_grads = _loss_and_grads(model, batch)
    got_loss, got_grads = _loss_and_grads(model, batch, decoder=dec)
    assert dec.active, dec.fell_back
    torch.testing.assert_close(got_loss, ref_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_train_config_keys_reach_the_trainer() -> None:
    from consortium.config import ConfigError, load_config
    from consortium.local.params import train_params

    cfg = load_config(preset="smoke")
    assert train_params(cfg, 3) == TrainParams(
        steps=3, batch_size=cfg.train.batch_size, lr=cfg.train.lr, grad_clip=cfg.train.grad_clip
    )  # the defaults are the plain loop's
    sets = ["train.packing=true", "train.compile=true", "train.bf16=true", "train.loss_chunk=512"]
    fast = train_params(load_config(preset="smoke", overrides=sets), 3)
    assert fast.packing and fast.compile and fast.bf16 and fast.loss_chunk == 512 and fast.fused_optimizer
    with pytest.raises(ConfigError, match=r"train\.loss_chunk"):
        load_config(preset="smoke", overrides=["train.loss_chunk=-1"])
