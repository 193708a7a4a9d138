"""Partitioning among participants: every example exactly once, schemes behave as documented, bad input."""

from __future__ import annotations

from collections import Counter

import pytest

from consortium.data import DataError, Example, build_corpus, partition

DOMAINS5 = ["arithmetic", "units", "dates", "strings", "policy"]
TRAIN = build_corpus(DOMAINS5, 40, 0, seed=0).train


def purity(shards: list[list[Example]]) -> float:
    """Mean share of each participant's most common domain (1.0 = single-domain participants)."""
    return sum(Counter(e.domain for e in s).most_common(1)[0][1] / len(s) for s in shards) / len(shards)


@pytest.mark.parametrize("scheme", ["domain", "dirichlet", "iid"])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 12])
def test_every_example_exactly_once_and_no_empty_shard(scheme: str, n: int) -> None:
    shards = partition(TRAIN, n, scheme, 0.3, seed=4)
    assert len(shards) == n
    assert all(shards)
    assert sum(len(s) for s in shards) == len(TRAIN)
    assert Counter(e for s in shards for e in s) == Counter(TRAIN)


@pytest.mark.parametrize("scheme", ["domain", "dirichlet", "iid"])
def test_deterministic_for_a_seed(scheme: str) -> None:
    assert partition(TRAIN, 4, scheme, 0.5, seed=9) == partition(TRAIN, 4, scheme, 0.5, seed=9)


@pytest.mark.parametrize("scheme", ["dirichlet", "iid"])
def test_seed_changes_the_split(scheme: str) -> None:
    assert partition(TRAIN, 4, scheme, 0.5, seed=1) != partition(TRAIN, 4, scheme, 0.5, seed=2)


def test_domain_scheme_one_domain_per_participant() -> None:
    shards = partition(TRAIN, 5, "domain", 1.0, seed=0)
    assert [{e.domain for e in s} for s in shards] == [{d} for d in DOMAINS5]
    assert [len(s) for s in shards] == [40] * 5


def test_domain_scheme_more_participants_split_domains_round_robin() -> None:
    shards = partition(TRAIN, 8, "domain", 1.0, seed=0)
    assert [next(iter({e.domain for e in s})) for s in shards] == DOMAINS5 + DOMAINS5[:3]
    assert all(len({e.domain for e in s}) == 1 for s in shards)
    assert [len(s) for s in shards] == [20, 20, 20, 40, 40, 20, 20, 20]


def test_domain_scheme_fewer_participants_hold_whole_domains() -> None:
    shards = partition(TRAIN, 2, "domain", 1.0, seed=0)
    assert [sorted({e.domain for e in s}) for s in shards] == [
        ["arithmetic", "dates", "policy"],
        ["strings", "units"],
    ]


def test_domain_scheme_too_few_examples_of_a_domain() -> None:
    few = [Example(f"p{i}", "r", "a") for i in range(3)] + [Example("q", "r", "b")]
    with pytest.raises(DataError, match="domain 'b' has 1 examples"):
        partition(few, 4, "domain", 1.0, 0)


def test_dirichlet_small_alpha_is_non_iid_large_alpha_close_to_iid() -> None:
    skewed = purity(partition(TRAIN, 5, "dirichlet", 0.05, seed=0))
    mixed = purity(partition(TRAIN, 5, "dirichlet", 1000.0, seed=0))
    iid = purity(partition(TRAIN, 5, "iid", 1.0, seed=0))
    assert skewed > 0.7
    assert mixed < 0.4 and iid < 0.4
    sizes = [len(s) for s in partition(TRAIN, 5, "dirichlet", 0.05, seed=0)]
    assert max(sizes) > 2 * min(sizes)  # quantity skew too


def test_dirichlet_gives_everyone_an_example_even_when_the_draw_does_not() -> None:
    shards = partition(TRAIN, 60, "dirichlet", 0.01, seed=0)
    assert all(shards) and sum(map(len, shards)) == len(TRAIN)


def test_iid_sizes_differ_by_at_most_one() -> None:
    sizes = [len(s) for s in partition(TRAIN, 7, "iid", 1.0, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def test_shards_keep_input_order() -> None:
    pos = {e: i for i, e in enumerate(TRAIN)}
    for s in partition(TRAIN, 3, "iid", 1.0, seed=0):
        assert [pos[e] for e in s] == sorted(pos[e] for e in s)


@pytest.mark.parametrize(
    ("n", "scheme", "alpha", "match"),
    [
        (0, "iid", 1.0, "n_participants must be an integer >= 1, got 0"),
        (-2, "domain", 1.0, "n_participants"),
        (2.5, "iid", 1.0, "n_participants"),
        (2, "dirichlet", 0.0, "alpha must be > 0, got 0.0"),
        (2, "dirichlet", -1.0, "alpha must be > 0"),
        (2, "dirichlet", float("nan"), "alpha must be > 0"),
        (2, "random", 1.0, "unknown partition scheme 'random'; known schemes: domain, dirichlet, iid"),
        (len(TRAIN) + 1, "iid", 1.0, "at least one example each"),
    ],
)
def test_bad_input(n: int, scheme: str, alpha: float, match: str) -> None:
    with pytest.raises(DataError, match=match):
        partition(TRAIN, n, scheme, alpha, seed=0)
