"""Chat tokenisation: loss on the answer and end-of-turn only, prompt as in generation, safe truncation."""

from __future__ import annotations

import pytest

from consortium.data import DataError, EncodedExample, Example, build_corpus, encode_example, encode_prompt
from consortium.data.tokenize import IGNORE_INDEX
from consortium.model.tiny import build_tiny_tokenizer

TOK = build_tiny_tokenizer()
EX = Example("How many centimetres are in 7 metres? Answer with the number only.", "700", "units")


def full_conversation_ids(ex: Example) -> list[int]:
    msgs = [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.response}]
    return TOK.encode(TOK.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)


def test_prompt_is_masked_and_targets_are_response_plus_eos() -> None:
    enc = encode_example(TOK, EX, max_len=256)
    prompt = encode_prompt(TOK, EX.prompt)
    assert len(enc.input_ids) == len(enc.labels)
    assert enc.input_ids[: len(prompt)] == prompt  # training prefix == what generation sees
    assert enc.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    targets = enc.labels[len(prompt) :]
    assert IGNORE_INDEX not in targets
    assert targets == enc.input_ids[len(prompt) :]
    assert TOK.decode(targets) == "700<|im_end|>"
    assert targets[-1] == TOK.eos_token_id
    assert TOK.decode(prompt).endswith("<|im_start|>assistant\n")


def test_tokens_equal_the_templated_conversation_prefix() -> None:
    for ex in build_corpus(["arithmetic", "dates", "strings", "policy"], 5, 0, seed=0).train:
        enc = encode_example(TOK, ex, max_len=512)
        assert full_conversation_ids(ex)[: len(enc.input_ids)] == enc.input_ids


def test_no_system_prompt_is_added() -> None:
    assert "system" not in TOK.decode(encode_prompt(TOK, "Hi"))


def test_truncation_drops_the_left_of_the_prompt_never_the_response() -> None:
    full = encode_example(TOK, EX, max_len=256)
    enc = encode_example(TOK, EX, max_len=20)
    assert len(enc.input_ids) == 20
    assert enc.input_ids == full.input_ids[-20:]
    assert enc.labels == full.labels[-20:]
    assert TOK.decode([t for t in enc.labels if t != IGNORE_INDEX]) == "700<|im_end|>"
    assert enc.labels[0] == IGNORE_INDEX  # some prompt is kept
    assert encode_example(TOK, EX, max_len=len(full.input_ids)) == full  # exactly fits: untouched


def test_response_longer_than_max_len_raises() -> None:
    long = Example("Q?", "x" * 30, "d")
    with pytest.raises(DataError, match=r"response of a 'd' example needs 31 tokens.*max_len=16"):
        encode_example(TOK, long, max_len=16)
    with pytest.raises(DataError, match="no room for the prompt"):
        encode_example(TOK, Example("Q?", "x" * 15, "d"), max_len=16)  # 15 + eos fills it entirely


def test_template_that_does_not_end_turns_with_eos_is_refused() -> None:
    tok = build_tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '\n\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(DataError, match="template is not supported"):
        encode_example(tok, EX, max_len=256)


def test_encoded_example_checks_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        EncodedExample(input_ids=[1, 2], labels=[1])


def test_whole_demo_corpus_fits_the_demo_max_len() -> None:
    corpus = build_corpus(["arithmetic", "units", "dates", "strings", "policy"], 40, 10, seed=0)
    for ex in corpus.train:
        enc = encode_example(TOK, ex, max_len=128)
        n_targets = sum(t != IGNORE_INDEX for t in enc.labels)
        assert n_targets == len(ex.response.encode()) + 1  # byte tokenizer: one token per byte, plus eos
