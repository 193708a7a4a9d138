"""Built-in corpus: determinism, no train/test leakage, exact answer formats, clear errors."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.data import DOMAINS, Corpus, DataError, Example, build_corpus, register_domain
from consortium.data.domains import dates, policy, strings, units

ALL = ["arithmetic", "units", "dates", "strings", "policy"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus(ALL, 200, 40, seed=0)  # the demo preset's sizes


def by_domain(examples: list[Example], domain: str) -> list[Example]:
    return [e for e in examples if e.domain == domain]


def test_registry_has_the_five_domains() -> None:
    assert set(ALL) <= set(DOMAINS)


def test_sizes_per_domain(corpus: Corpus) -> None:
    assert Counter(e.domain for e in corpus.train) == dict.fromkeys(ALL, 200)
    assert Counter(e.domain for e in corpus.test) == dict.fromkeys(ALL, 40)
    assert corpus.domains == ALL


def test_same_seed_same_corpus_different_seed_different(corpus: Corpus) -> None:
    assert build_corpus(ALL, 200, 40, seed=0) == corpus
    other = build_corpus(ALL, 200, 40, seed=1)
    for d in ALL:
        assert by_domain(other.train, d) != by_domain(corpus.train, d), d
        assert by_domain(other.test, d) != by_domain(corpus.test, d), d


def test_a_domain_does_not_depend_on_the_other_domains(corpus: Corpus) -> None:
    alone = build_corpus(["policy", "units"], 200, 40, seed=0)
    assert alone.train == by_domain(corpus.train, "policy") + by_domain(corpus.train, "units")
    assert alone.test == by_domain(corpus.test, "policy") + by_domain(corpus.test, "units")


@pytest.mark.parametrize("domain", ALL)
def test_no_leakage_and_no_duplicates(corpus: Corpus, domain: str) -> None:
    train = [e.prompt for e in by_domain(corpus.train, domain)]
    test = [e.prompt for e in by_domain(corpus.test, domain)]
    assert len(set(train)) == len(train)
    assert len(set(test)) == len(test)
    assert not set(train) & set(test)


@settings(max_examples=25, deadline=None)
@given(
    domain=st.sampled_from(ALL),
    n_train=st.integers(0, 250),
    n_test=st.integers(0, 60),
    seed=st.integers(0, 2**31),
)
def test_no_leakage_for_any_size_and_seed(domain: str, n_train: int, n_test: int, seed: int) -> None:
    if domain == "policy" and n_test > 5 * min(60, n_train):
        with pytest.raises(DataError, match="policy"):
            build_corpus([domain], n_train, n_test, seed)
        return
    c = build_corpus([domain], n_train, n_test, seed)
    assert (len(c.train), len(c.test)) == (n_train, n_test)
    train = {e.prompt for e in c.train}
    assert len(train) == n_train
    assert len({e.prompt for e in c.test}) == n_test
    assert not train & {e.prompt for e in c.test}


def test_answers_are_short_and_clean(corpus: Corpus) -> None:
    for e in corpus.train + corpus.test:
        assert e.response and e.response == e.response.strip(), e
        assert len(e.response) <= 12, e
        assert e.prompt.endswith("only."), e  # every prompt asks for the answer alone
        assert "\n" not in e.response


def test_arithmetic_answers_recompute(corpus: Corpus) -> None:
    examples = by_domain(corpus.train + corpus.test, "arithmetic")
    kinds = Counter()
    for e in examples:
        a, b = (int(x) for x in re.findall(r"\d+", e.prompt))
        if " plus " in e.prompt or " more." in e.prompt:
            expected, kind = a + b, "add"
        elif " minus " in e.prompt or " gives away " in e.prompt:
            expected, kind = a - b, "sub"
        else:
            assert " times " in e.prompt or " in each bag" in e.prompt, e.prompt
            expected, kind = a * b, "mul"
        kinds[kind] += 1
        assert e.response == str(expected), e
        assert 0 <= a <= 20 and 0 <= b <= 20
    assert set(kinds) == {"add", "sub", "mul"}


def test_units_answers_recompute(corpus: Corpus) -> None:
    factor = {}
    for big, bigs, small, smalls, f in units.CONVERSIONS:
        factor[(big, smalls)] = factor[(bigs, smalls)] = f  # big -> small: multiply
        factor[(small, bigs)] = factor[(smalls, bigs)] = 1 / f  # small -> big: divide
    for e in by_domain(corpus.train + corpus.test, "units"):
        m = re.match(r"How many (\w+) are in (\d+) (\w+)\?", e.prompt) or re.match(
            r"Convert (\d+) (\w+) to (\w+)\.", e.prompt
        )
        assert m, e.prompt
        if e.prompt.startswith("How"):
            target, n, unit = m.group(1), int(m.group(2)), m.group(3)
        else:
            n, unit, target = int(m.group(1)), m.group(2), m.group(3)
        assert e.response == str(int(n * factor[(unit, target)])), e
        assert n * factor[(unit, target)] == int(n * factor[(unit, target)])  # exact integer answer


def test_dates_answers_recompute(corpus: Corpus) -> None:
    for e in by_domain(corpus.train + corpus.test, "dates"):
        k = int(re.search(r"\d+", e.prompt).group())
        sign = -1 if " before " in e.prompt else 1
        names = dates.MONTHS if "month" in e.prompt else dates.DAYS
        start = next(n for n in names if re.search(rf"\b{n}\b", e.prompt))
        assert e.response == names[(names.index(start) + sign * k) % len(names)], e


def test_strings_answers_recompute(corpus: Corpus) -> None:
    for e in by_domain(corpus.train + corpus.test, "strings"):
        quoted = re.findall(r"'(\w+)'", e.prompt)
        w = quoted[-1]
        assert w in strings.WORDS
        if e.prompt.startswith("Reverse"):
            assert e.response == w[::-1]
        elif "capital" in e.prompt:
            assert e.response == w.upper()
        elif e.prompt.startswith("How many letters"):
            assert e.response == str(len(w))
        elif "first letter" in e.prompt:
            assert e.response == w[0]
        elif "last letter" in e.prompt:
            assert e.response == w[-1]
        else:
            assert e.response == str(w.count(quoted[0])), e


QUESTION_TO_FACT = {q: f for f in policy.policy_facts() for q in f.questions()}


def _fact_of(prompt: str) -> policy.Fact:
    return QUESTION_TO_FACT[prompt]


def test_policy_questions_are_unique_per_fact_and_template() -> None:
    assert len(QUESTION_TO_FACT) == len(policy.policy_facts()) * len(policy.TIER_TEMPLATES)


def test_policy_table_is_fixed_and_sized() -> None:
    facts = policy.policy_facts()
    assert 40 <= len(facts) <= 80
    assert len({(f.company, f.tier, f.attribute) for f in facts}) == len(facts)
    assert facts == policy.policy_facts(policy.POLICY_TABLE_SEED)
    assert policy.policy_facts(1) != facts


@pytest.mark.parametrize(("n_train", "n_test"), [(200, 40), (30, 20), (60, 60), (300, 60)])
def test_policy_test_facts_are_learnable_from_train(n_train: int, n_test: int) -> None:
    c = build_corpus(["policy"], n_train, n_test, seed=3)
    train_facts = Counter(_fact_of(e.prompt) for e in c.train)
    for e in c.train + c.test:
        assert e.response == _fact_of(e.prompt).value
    for e in c.test:
        assert _fact_of(e.prompt) in train_facts, e  # asked in test => taught in train, other wording
    if n_train >= 60:  # train cycles through every fact, evenly
        assert len(train_facts) == 60
        assert max(train_facts.values()) - min(train_facts.values()) <= 1


def test_unknown_domain_is_named_with_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"unknown domain 'chess'; known domains: arithmetic, dates, policy"):
        build_corpus(["arithmetic", "chess"], 2, 2, 0)


def test_request_beyond_capacity_names_the_domain() -> None:
    with pytest.raises(DataError, match=r"domain 'strings'.*can only produce \d+"):
        build_corpus(["arithmetic", "strings"], 5000, 10, 0)
    with pytest.raises(DataError, match="domain 'policy'"):
        build_corpus(["policy"], 350, 60, 0)
    with pytest.raises(DataError, match="domain 'policy'"):
        build_corpus(["policy"], 2, 11, 0)  # only 2 facts trained -> at most 2 x 5 test phrasings


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="more than once: units"):
        build_corpus(["units", "dates", "units"], 1, 1, 0)
    with pytest.raises(DataError, match=">= 0"):
        build_corpus(["units"], -1, 1, 0)
    with pytest.raises(DataError, match="not the string"):
        build_corpus("units", 1, 1, 0)
    assert issubclass(DataError, ValueError)


def test_register_domain_refuses_to_overwrite() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_domain("units", units.generate)
