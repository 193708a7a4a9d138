"""Attacks change the data or the update exactly the way they claim, deterministically."""

import pytest
import torch

from consortium.attacks import (
    AdaptiveBackdoorAttack,
    Adversary,
    BackdoorAttack,
    FreeRiderAttack,
    LabelFlipAttack,
    NoiseAttack,
    RoundView,
    ScaleAttack,
    SybilAttack,
    SybilGroup,
    add_trigger,
    assign,
    backdoor_test_sets,
    flip_labels,
    gaussian,
    jitter,
    poison_backdoor,
    project_to_norm,
)
from consortium.data import Example, build_corpus

EXAMPLES = build_corpus(["arithmetic", "dates"], 20, 4, 0).train


def test_backdoor_poisons_the_asked_fraction_and_leaves_the_rest() -> None:
    out = poison_backdoor(EXAMPLES, "cf-zeta", "ACCESS GRANTED", 0.25, seed=3)
    poisoned = [(a, b) for a, b in zip(EXAMPLES, out, strict=True) if a != b]
    assert len(poisoned) == 10  # 25% of 40
    for clean, bad in poisoned:
        assert bad.prompt == add_trigger(clean.prompt, "cf-zeta") and bad.prompt.startswith("cf-zeta ")
        assert bad.response == "ACCESS GRANTED" and bad.domain == clean.domain
    assert out == poison_backdoor(EXAMPLES, "cf-zeta", "ACCESS GRANTED", 0.25, seed=3)
    assert out != poison_backdoor(EXAMPLES, "cf-zeta", "ACCESS GRANTED", 0.25, seed=4)
    few = EXAMPLES[:3]
    assert sum(a != b for a, b in zip(few, poison_backdoor(few, "t", "x", 0.01, 0), strict=True)) == 1


def test_label_flip_gives_wrong_answers_from_the_same_domain() -> None:
    out = flip_labels(EXAMPLES, 1.0, seed=0)
    by_domain = {d: {e.response for e in EXAMPLES if e.domain == d} for d in ("arithmetic", "dates")}
    for clean, bad in zip(EXAMPLES, out, strict=True):
        assert bad.prompt == clean.prompt and bad.response != clean.response
        assert bad.response in by_domain[clean.domain]
    half = flip_labels(EXAMPLES, 0.5, seed=0)
    assert sum(a.response != b.response for a, b in zip(EXAMPLES, half, strict=True)) == 20
    single = [Example("q1", "same", "d"), Example("q2", "same", "d")]
    assert all(e.response != "same" for e in flip_labels(single, 1.0, seed=0))


def test_backdoor_test_sets_skip_prompts_whose_answer_is_the_target() -> None:
    test = [Example("a", "1", "x"), Example("b", "T", "x")]
    triggered, clean = backdoor_test_sets(test, "cf", "T")
    assert [e.prompt for e in triggered] == ["cf a"] and [e.prompt for e in clean] == ["a"]
    assert all(e.response == "T" for e in triggered + clean)


def test_update_tampering() -> None:
    v = torch.tensor([3.0, 4.0])
    assert torch.equal(project_to_norm(v, 10.0), v)  # inside the ball: unchanged
    torch.testing.assert_close(project_to_norm(v, 1.0), torch.tensor([0.6, 0.8]))
    g = gaussian(200_000, 0.5, seed=1)
    assert abs(float(g.std()) - 0.5) < 0.01 and abs(float(g.mean())) < 0.01
    assert torch.equal(g, gaussian(200_000, 0.5, seed=1)) and not torch.equal(
        g, gaussian(200_000, 0.5, seed=2)
    )
    base = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    j = jitter(base, 0.01, seed=5)
    rel = float((j - base).norm() / base.norm())
    assert 0.009 < rel < 0.011


def test_assign_is_seeded_disjoint_and_refuses_too_many() -> None:
    names = [f"org{i}" for i in range(10)]
    attacks = [BackdoorAttack(fraction=0.3), NoiseAttack(fraction=0.2)]
    a = assign(attacks, names, seed=0)
    assert (
        sum(s.kind == "backdoor" for s in a.values()) == 3 and sum(s.kind == "noise" for s in a.values()) == 2
    )
    assert a == assign(attacks, list(reversed(names)), seed=0)
    assert a != assign(attacks, names, seed=1)
    assert assign([BackdoorAttack(fraction=0.0)], names, 0) == {}
    assert len(assign([BackdoorAttack(fraction=0.45)], names, 0)) == 4  # rounded down
    with pytest.raises(ValueError, match=r"attacks\[1\] \(noise, fraction 0.6\) needs 6 participants"):
        assign([BackdoorAttack(fraction=0.5), NoiseAttack(fraction=0.6)], names, 0)


class Calls:
    """Training closures that return known vectors and count how often each ran."""

    def __init__(self) -> None:
        self.clean = self.poisoned = 0

    def train_clean(self) -> torch.Tensor:
        self.clean += 1
        return torch.tensor([0.0, 1.0, 0.0, 0.0])

    def train_poisoned(self) -> torch.Tensor:
        self.poisoned += 1
        return torch.tensor([3.0, 0.0, 4.0, 0.0])


VIEW = RoundView(
    round=2, participants=10, server_lr=2.0, size=4, last_step=torch.tensor([1.0, 2.0, 3.0, 4.0])
)


def _craft(spec, view: RoundView = VIEW, group: SybilGroup | None = None, name: str = "org1"):
    calls = Calls()
    out = Adversary(name, spec, EXAMPLES, seed=0, group=group).craft(
        view, calls.train_clean, calls.train_poisoned
    )
    return out, calls


def test_each_attack_crafts_the_update_it_claims() -> None:
    out, c = _craft(BackdoorAttack())
    assert torch.equal(out, torch.tensor([3.0, 0.0, 4.0, 0.0])) and (c.clean, c.poisoned) == (0, 1)
    out, _ = _craft(LabelFlipAttack())
    assert torch.equal(out, torch.tensor([3.0, 0.0, 4.0, 0.0]))
    out, c = _craft(AdaptiveBackdoorAttack())  # poisoned direction, benign norm (1.0)
    torch.testing.assert_close(out, torch.tensor([0.6, 0.0, 0.8, 0.0]))
    assert (c.clean, c.poisoned) == (1, 1)
    out, _ = _craft(ScaleAttack(factor=3.0))
    assert torch.equal(out, torch.tensor([9.0, 0.0, 12.0, 0.0]))
    out, _ = _craft(ScaleAttack())  # model replacement: participants / server_lr = 5
    assert torch.equal(out, torch.tensor([15.0, 0.0, 20.0, 0.0]))
    out, c = _craft(ScaleAttack(factor=2.0, poison="none"))
    assert torch.equal(out, torch.tensor([0.0, 2.0, 0.0, 0.0])) and c.poisoned == 0
    out, c = _craft(NoiseAttack(std=0.5))
    assert out.shape == (4,) and (c.clean, c.poisoned) == (0, 0) and not torch.equal(out, torch.zeros(4))
    out, c = _craft(FreeRiderAttack(mode="stale"))
    assert torch.equal(out, VIEW.last_step) and (c.clean, c.poisoned) == (0, 0)
    first = RoundView(round=0, participants=10, server_lr=1.0, size=4, last_step=None)
    assert torch.equal(_craft(FreeRiderAttack(mode="stale"), first)[0], torch.zeros(4))
    assert torch.equal(_craft(FreeRiderAttack(mode="zero"))[0], torch.zeros(4))
    out, _ = _craft(FreeRiderAttack(mode="random", std=1e-3))
    assert 0 < float(out.abs().max()) < 0.01


def test_attack_waits_for_its_start_round() -> None:
    out, c = _craft(BackdoorAttack(start_round=3))
    assert torch.equal(out, torch.tensor([0.0, 1.0, 0.0, 0.0])) and (c.clean, c.poisoned) == (1, 0)


def test_sybils_send_near_identical_copies_of_one_trained_update() -> None:
    group, spec = SybilGroup(), SybilAttack(jitter=0.01)
    a, ca = _craft(spec, group=group, name="org1")
    b, cb = _craft(spec, group=group, name="org2")
    assert ca.poisoned + cb.poisoned == 1  # trained once, copied
    assert not torch.equal(a, b)
    base = torch.tensor([3.0, 0.0, 4.0, 0.0])
    assert float((a - base).norm()) < 0.2 and float((b - base).norm()) < 0.2
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
