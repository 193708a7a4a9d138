"""The honest voter's judgement, the public screen before aggregation, and commit URIs."""

from __future__ import annotations

import pytest
import torch

from consortium.config import ConfigError, load_config
from consortium.defense import DefenseParams
from consortium.defense.screen import screen
from consortium.round.records import ProtocolError, commit_uri, parse_uri
from consortium.round.voting import VoteRule, judge


def _loss(target: torch.Tensor):
    """A held-out loss whose minimum is `target`: distance squared, plus one."""
    return lambda v: float(((v - target) ** 2).sum()) + 1.0


def test_judge_accepts_a_better_candidate_and_rejects_a_worse_one() -> None:
    target = torch.tensor([1.0, 1.0])
    g = torch.zeros(2)
    good = judge(torch.tensor([0.5, 0.5]), g, {}, [], _loss(target), VoteRule())
    assert good.accept and good.loss_candidate < good.loss_global
    bad = judge(torch.tensor([-1.0, -1.0]), g, {}, [], _loss(target), VoteRule())
    assert not bad.accept
    none = judge(None, g, {}, [], _loss(target), VoteRule())
    assert not none.accept and none.loss_candidate is None


def test_tolerance_admits_a_slightly_worse_candidate() -> None:
    target = torch.zeros(1)
    worse = torch.tensor([0.1])  # loss 1.01 vs 1.0
    assert judge(worse, torch.zeros(1), {}, [], _loss(target), VoteRule(accept_tolerance=0.02)).accept
    assert not judge(worse, torch.zeros(1), {}, [], _loss(target), VoteRule(accept_tolerance=0.0)).accept


def test_flags_updates_that_hurt_held_out_loss_and_keeps_pipeline_flags() -> None:
    target = torch.tensor([1.0, 0.0])
    updates = {"a": torch.tensor([0.5, 0.0]), "b": torch.tensor([-2.0, 0.0]), "c": torch.tensor([0.4, 0.1])}
    v = judge(torch.tensor([0.3, 0.0]), torch.zeros(2), updates, ["c"], _loss(target), VoteRule())
    assert v.flags == ["b", "c"]
    assert "held-out loss" in v.reasons["b"] and "pipeline" in v.reasons["c"]
    off = judge(
        torch.tensor([0.3, 0.0]), torch.zeros(2), updates, [], _loss(target), VoteRule(), check_updates=False
    )
    assert off.flags == []


def test_screen_drops_empty_and_replayed_updates_only() -> None:
    last = torch.tensor([1.0, 2.0, 0.0])
    ups = torch.stack(
        [torch.tensor([0.5, -1.0, 2.0]), torch.zeros(3), 3 * last, torch.tensor([2.0, 0.1, -1.0])]
    )
    out = screen(ups, last, 0.05, 0.99)
    assert sorted(out) == [1, 2]
    assert "norm" in out[1] and "replays" in out[2]
    assert screen(ups, None, 0.05, 0.99).keys() == {1}  # no last step: no replay check
    assert screen(ups, last, 0.0, 2.0) == {}  # both checks off


def test_screen_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="screen_min_norm"):
        DefenseParams(screen_min_norm=1.5)
    with pytest.raises(ValueError, match="screen_stale_cosine"):
        DefenseParams(screen_stale_cosine=0)


def test_commit_uri_round_trips_and_refuses_malformed() -> None:
    blob = "ab" * 32
    assert parse_uri(commit_uri(blob, 12, "c0ffee")) == (blob, 12, "c0ffee")
    for bad in (
        f"http://x/{blob}?n=1&config=c",
        f"cas:{blob}?n=x&config=c",
        f"cas:{blob}?n=3",
        "cas:abc?n=1&config=c",
        f"cas:{blob}?n=\u00b2&config=c",  # "²".isdigit() is True, int("²") raises
        f"cas:{blob}?n=0&config=c",
        f"cas:{blob}?n=-1&config=c",
        f"cas:{blob}?n=1" + "0" * 18 + "&config=c",
        f"cas:{blob}?n=1&config=c\n",
        f"cas:{blob}?n=1&config=c&n=2",
    ):
        with pytest.raises(ProtocolError, match="commit URI"):
            parse_uri(bad)


def test_chain_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="fltrust"):
        load_config(preset="smoke", overrides=["aggregator=fltrust"])
    with pytest.raises(ConfigError, match="proposers"):
        load_config(preset="smoke", overrides=["chain.n_voters=3", "chain.n_proposers=3"])
    # 2 voters of the 6 roles of 6 participants: no candidate could ever hold over a third of the draw
    with pytest.raises(ConfigError, match=r"the 2 voters of the 6 roles .* no candidate could ever be"):
        load_config(preset="smoke", overrides=["participants=6", "chain.n_voters=2"])
    committee = ["participants=6", "chain.n_voters=2", "chain.proposers_vote=true"]
    assert load_config(preset="smoke", overrides=committee).chain.proposers_vote
    with pytest.raises(ConfigError, match="min_stake"):
        load_config(preset="smoke", overrides=["chain.min_stake=20"])
    with pytest.raises(ConfigError, match="strategies"):
        load_config(
            preset="smoke", overrides=['strategies=[{kind="no_show", fraction=1.0}, {kind="lazy_voter"}]']
        )
    ok = load_config(preset="smoke", overrides=["aggregator=fltrust", "protocol=central"])
    assert ok.protocol == "central"
    with pytest.warns(FutureWarning, match="protocol = 'fedavg' is now called 'central'"):
        old = load_config(preset="smoke", overrides=["aggregator=fltrust", "protocol=fedavg"])
    assert old == ok  # the old name of the baseline is still read, with a one-line notice
    assert load_config(preset="smoke").chain.roles(4) == (2, 2)  # voters hold more than a third
    assert load_config(preset="smoke").chain.roles(20) == (8, 10)  # two spares: a slashed one does not halt


def test_base_margin_accepts_a_drift_that_still_beats_the_base_model() -> None:
    # non-IID: the global model fits this voter's domain (loss 1.0); the candidate learned others'
    # domains and costs some of it (loss 2.0), but the untuned base is far worse (loss 5.0)
    target = torch.zeros(1)
    cand, glob, base = torch.tensor([1.0]), torch.zeros(1), 5.0
    assert not judge(cand, glob, {}, [], _loss(target), VoteRule()).accept
    rule = VoteRule(base_margin=0.5)
    assert judge(cand, glob, {}, [], _loss(target), rule, loss_base=base).accept  # 2.0 <= 5.0 * 0.5
    assert not judge(cand, glob, {}, [], _loss(target), rule, loss_base=3.0).accept  # 2.0 > 1.5
    assert not judge(cand, glob, {}, [], _loss(target), rule).accept  # no base loss: no second test


def test_base_margin_does_not_flag_an_update_that_still_beats_the_base_model() -> None:
    # the update moves this voter's loss 1.0 -> 2.0 (over the 10% margin) but the base model's is 5.0
    target, glob = torch.zeros(1), torch.zeros(1)
    updates = {"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}  # losses 2.0 and 5.0
    assert judge(glob, glob, updates, [], _loss(target), VoteRule()).flags == ["a", "b"]
    v = judge(glob, glob, updates, [], _loss(target), VoteRule(base_margin=0.5), loss_base=5.0)
    assert v.flags == ["b"]  # 2.0 <= 5.0 * 0.5 is kept; 5.0 is not
