"""Exact match: the one-pass teacher-forced verdict agrees with greedy generation on a trained model."""

import pytest

from consortium.data import Example, build_corpus, encode_example
from consortium.evaluate import accuracy_by_domain, exact_match_verdicts, greedy_answers, is_correct
from consortium.model import LoraSpec, attach, get_flat, load_base, set_flat
from consortium.train import LocalTrainer, TrainParams

SYSTEM = "Be brief."


@pytest.fixture(scope="module")
def memorised():
    """A tiny Llama overfitted on a few examples, so that some answers are right and some are not."""
    base, tok = load_base("tiny", seed=3)
    spec = LoraSpec(variant="lora", r=16, alpha=32.0, target_modules=("q_proj", "v_proj", "o_proj"))
    model = attach(base, spec)
    corpus = build_corpus(["strings", "dates"], 6, 6, seed=0)
    taught = corpus.train[:8]
    enc = [encode_example(tok, e, 128, SYSTEM) for e in taught]
    trainer = LocalTrainer(model, spec, tok.pad_token_id)
    start = get_flat(model, spec)
    res = trainer.train(start, enc, TrainParams(steps=150, batch_size=8, lr=3e-2), seed=0)
    set_flat(model, spec, start + res.delta)
    return model, tok, taught + corpus.test


def test_teacher_forced_equals_greedy(memorised) -> None:
    model, tok, examples = memorised
    tf = exact_match_verdicts(model, tok, examples, "teacher_forced", 5, 12, SYSTEM)
    greedy = exact_match_verdicts(model, tok, examples, "greedy", 5, 12, SYSTEM)
    assert tf == greedy
    assert 0 < sum(tf) < len(tf)  # the comparison is not vacuous: some right, some wrong


def test_accuracy_by_domain_and_normalisation(memorised) -> None:
    model, tok, examples = memorised
    answers = greedy_answers(model, tok, [e.prompt for e in examples], 4, 12, SYSTEM)
    verdicts = [is_correct(a, e.response) for a, e in zip(answers, examples, strict=True)]
    acc = accuracy_by_domain(examples, verdicts)
    assert set(acc) == {"strings", "dates", "mean"}
    assert acc["mean"] == pytest.approx((acc["strings"] + acc["dates"]) / 2)
    assert is_correct(" 42. ", "42") and not is_correct("420", "42") and not is_correct("box", "BOX")
    one = [Example("p", "a", "x"), Example("q", "b", "x"), Example("r", "c", "y")]
    assert accuracy_by_domain(one, [True, False, True]) == {"x": 0.5, "y": 1.0, "mean": 0.75}


def test_teacher_forced_equals_greedy_on_warm_model() -> None:
    """The same agreement on the warmed-up tiny model (pre-trained, not overfitted on the test items)."""
    base, tok = load_base("tiny-warm")
    examples = build_corpus(["arithmetic", "dates", "policy", "strings", "units"], 4, 8, seed=5).test
    tf = exact_match_verdicts(base, tok, examples, "teacher_forced", 8, 24, "You are a concise assistant.")
    greedy = exact_match_verdicts(base, tok, examples, "greedy", 8, 24, "You are a concise assistant.")
    assert tf == greedy
    assert 0 < sum(tf) < len(tf), sum(tf)
