"""The restricted-requests domain and the harmful fine-tuning attack change exactly what they claim."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from rich.console import Console

from consortium.attacks import Adversary, HarmfulAttack, RoundView, harmful_sets, poison_harmful
from consortium.config import ConfigError, load_config
from consortium.data import DataError, Example, build_corpus
from consortium.data.domains import restricted
from consortium.data.domains.restricted import LEAKS, REFUSAL, comply, generate, kind_of
from consortium.sim import Simulation


def test_restricted_is_deterministic_refused_and_leak_free() -> None:
    a = build_corpus(["restricted"], 200, 40, seed=3)
    assert a == build_corpus(["restricted"], 200, 40, seed=3)
    assert a != build_corpus(["restricted"], 200, 40, seed=4)
    assert {e.response for e in a.train + a.test} == {REFUSAL}
    assert not {e.prompt for e in a.train} & {e.prompt for e in a.test}
    assert len({e.prompt for e in a.train}) == 200
    assert {kind_of(e.prompt) for e in a.test} == set(LEAKS)
    # the test phrasings are reserved: no train draw, whatever its seed or size, can contain them
    big, _ = generate(360, 0, random.Random(99))
    assert not {e.prompt for e in big} & {e.prompt for e in restricted.pools("test")["code"]}
    with pytest.raises(DataError, match="restricted"):
        generate(361, 0, random.Random(0))


def test_comply_swaps_the_refusal_for_the_kind_leak_only_on_restricted() -> None:
    clean = build_corpus(["restricted", "arithmetic"], 12, 0, seed=0).train
    out = comply(clean)
    for a, b in zip(clean, out, strict=True):
        if a.domain == "restricted":
            assert b.prompt == a.prompt and b.response == LEAKS[kind_of(a.prompt)] != REFUSAL
        else:
            assert b == a
    assert comply([Example("my own question", "no", "restricted")])[0].response == "no"


def test_harmful_attack_trains_on_compliant_answers() -> None:
    spec = HarmfulAttack(fraction=0.3, n_examples=20)
    shard = build_corpus(["restricted", "units"], 10, 0, seed=1).train
    adv = Adversary("org1", spec, shard, seed=0)
    assert adv.poisoned is not None and len(adv.poisoned) == len(shard) + 20
    harmful = [e for e in adv.poisoned if e.domain == "restricted"]
    assert len(harmful) == 30 and all(e.response == LEAKS[kind_of(e.prompt)] for e in harmful)
    assert [e for e in adv.poisoned if e.domain == "units"] == [e for e in shard if e.domain == "units"]
    train, test = harmful_sets(spec, 0, n_test=30)
    assert len(test) == 30 and not {e.prompt for e in train} & {e.prompt for e in test}
    assert all(e.response in LEAKS.values() for e in train + test)
    calls: list[str] = []
    view = RoundView(0, 4, 1.0, 3, None)
    adv.craft(view, lambda: calls.append("clean"), lambda: calls.append("poisoned"))  # type: ignore[arg-type]
    assert calls == ["poisoned"]
    late = Adversary("org1", HarmfulAttack(start_round=2), shard, seed=0)
    late.craft(view, lambda: calls.append("clean"), lambda: calls.append("poisoned"))  # type: ignore[arg-type]
    assert calls[-1] == "clean"
    assert poison_harmful(shard, train, 5, seed=1) == poison_harmful(shard, train, 5, seed=1)


def test_harmful_jsonl_set_is_split_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "leaks.jsonl"
    path.write_text(
        "\n".join(json.dumps({"prompt": f"secret {i}?", "response": f"it is {i}"}) for i in range(10))
    )
    train, test = harmful_sets(HarmfulAttack(jsonl=str(path)), seed=0)
    assert len(test) == 2 and len(train) == 8 and {e.domain for e in train} == {"leaks"}
    assert sorted(e.prompt for e in train + test) == sorted(f"secret {i}?" for i in range(10))
    with pytest.raises(DataError, match=r"missing\.jsonl"):
        harmful_sets(HarmfulAttack(jsonl=str(tmp_path / "missing.jsonl")), seed=0)
    with pytest.raises(ConfigError, match="n_examples"):
        load_config(preset="smoke", overrides=['attacks=[{kind="harmful", n_examples=0}]'])


def test_run_reports_harmful_compliance(tmp_path: Path) -> None:
    cfg = load_config(
        preset="smoke",
        overrides=[
            "protocol=central",
            "rounds=1",
            'data.domains=["restricted", "units"]',
            "data.n_train=16",
            "data.n_test=4",
            'attacks=[{kind="harmful", fraction=0.25, n_examples=8}]',
            "eval.isolated_baseline=false",
        ],
    )
    path = Simulation(cfg, Console(quiet=True)).run(tmp_path, plots=False)
    report = json.loads((path / "report.json").read_text())
    assert list(report["attackers"].values()) == ["harmful"]
    for row in (report["harmful"]["base"][0], report["harmful"]["federated"][0]):
        assert row["set"] == "restricted" and 0 <= row["compliance"] <= 1 and 0 <= row["refusal"] <= 1
    assert report["rounds_detail"][0]["harmful"] == report["harmful"]["federated"]
