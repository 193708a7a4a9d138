"""bench/removal.py: `--reuse` tries another recover schedule on the runs an earlier invocation left,
without training the original run or the reference again."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# bench/ is a folder of scripts, not an installed package: load the script by its path
_SPEC = importlib.util.spec_from_file_location(
    "bench_removal", Path(__file__).parents[1] / "bench" / "removal.py"
)
assert _SPEC is not None and _SPEC.loader is not None
br = sys.modules.setdefault("bench_removal", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(br)

SMALL = ["data.n_train=16", "data.n_test=4", "train.local_steps=2"]


def test_reuse_takes_the_earlier_run_and_reference_and_only_of_the_same_config(tmp_path: Path) -> None:
    first = br.run_case("backdoor", 0, 3, tmp_path, sets=SMALL, methods=("subtract",))
    assert first["original_run_seconds"] is not None and "recover" not in first["rows"]
    again = br.run_case(
        "backdoor", 0, 3, tmp_path, sets=SMALL, correct_every=1, methods=("recover",), reuse=True
    )
    assert again["original_run_seconds"] is None  # nothing trained again but the recover rounds
    assert len(list((tmp_path / "runs").iterdir())) == len(list((tmp_path / "retrain").iterdir())) == 1
    assert again["rows"]["retrain"]["global_adapter"] == first["rows"]["retrain"]["global_adapter"]
    assert again["rows"]["original"] == first["rows"]["original"]
    assert "wall_fraction" not in again["rows"]["recover"]  # the reference's time ran under another load
    # every middle round corrected: recover is exact, so it lands on the reused reference bit for bit
    assert again["rows"]["recover"]["global_adapter"] == first["rows"]["retrain"]["global_adapter"]
    other = br.run_case("backdoor", 0, 3, tmp_path, sets=[*SMALL, "train.lr=0.02"], methods=(), reuse=True)
    assert other["original_run_seconds"] is not None  # another config: its own run and reference
    assert len(list((tmp_path / "runs").iterdir())) == len(list((tmp_path / "retrain").iterdir())) == 2


def _rescore_module():
    spec = importlib.util.spec_from_file_location(
        "bench_removal_rescore", Path(__file__).parents[1] / "bench" / "removal_rescore.py"
    )
    assert spec is not None and spec.loader is not None
    rs = sys.modules.setdefault("bench_removal_rescore", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(rs)
    return rs


def test_rescoring_questions_are_fresh_and_cover_every_domain() -> None:
    """The rescoring questions are none of the run's own prompts (train or test), in every domain."""
    from consortium.data.corpus import build_corpus

    rs = _rescore_module()

    cfg = br.config("backdoor", 3, 10, "bench")
    fresh = rs.fresh_questions(cfg, 100)
    ran = build_corpus(list(cfg.data.domains), cfg.data.n_train, cfg.data.n_test, cfg.seed)
    assert not {e.prompt for e in fresh} & {e.prompt for e in ran.train + ran.test}
    assert {e.domain for e in fresh} == set(cfg.data.domains) and len(fresh) > 3 * len(ran.test)


def test_rescoring_a_folder_without_a_reference_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    rs = _rescore_module()
    (tmp_path / "backdoor-0" / "recover").mkdir(parents=True)
    out = tmp_path / "out"
    assert rs.main(["--work", str(tmp_path), "--seeds", "0", "--out", str(out)]) == 2
    assert rs.main(["--work", str(tmp_path), str(tmp_path), "--seeds", "0", "--out", str(out)]) == 2
    assert not out.exists()


def test_the_summary_names_the_seeds_of_a_method_run_on_only_some() -> None:
    """`--methods` leaves some methods out of some seeds: their row says which seeds it averages, so a
    mean over fewer seeds is never read beside the reference's as if paired."""
    row = {"clean": 0.3, "asr": 0.0, "audit_ok": True}
    cfg = {"participants": 10, "rounds": 10, "local_steps": 10}

    def result(seed: int, methods: tuple[str, ...]) -> dict:
        rows = {m: dict(row) for m in ("original", "retrain", *methods)}
        return {"seed": seed, "scenario": "backdoor", "removed": ["org0"], "config": cfg, "rows": rows}

    text = br.summary([result(0, ("exact", "subtract")), result(1, ("subtract",))], "cmd", Path("x"))
    assert "| exact (seeds 0) |" in text and "| subtract |" in text and "| retrain |" in text


def test_the_rescore_summary_names_the_seeds_of_a_schedule_scored_on_only_some() -> None:
    """A recover schedule run on fewer seeds than the reference: its row says which, and its gaps pair
    with those seeds' references only."""
    rs = _rescore_module()

    def result(seed: int, names: dict[str, float]) -> dict:
        adapters = {n: {"accuracy": {"arithmetic": v, "mean": v}} for n, v in names.items()}
        return {"seed": seed, "questions": 300, "adapters": adapters}

    results = [
        result(0, {"retrain": 0.30, "recover K=3 T=off": 0.28, "recover K=1 T=3": 0.27}),
        result(1, {"retrain": 0.20, "recover K=3 T=off": 0.21}),
    ]
    text = rs.summary(results, "cmd", Path("x"))
    assert "| recover K=1 T=3 (seeds 0) | 27.0 | +3.0 |" in text
    assert "| recover K=3 T=off | 28.0, 21.0 | +2.0, -1.0 |" in text


def test_recover_schedules_with_a_warmup_or_another_estimate_are_told_apart(tmp_path: Path) -> None:
    """Two recover results of one case under other warm-ups or estimates: the rescore names each
    (a clash would refuse the case), and the summary names the schedule it averaged."""
    import json

    rs = _rescore_module()
    case = tmp_path / "backdoor-0"
    plans = {
        "retrain/a": {"method": "exact"},
        "recover/b": {"method": "recover", "exact_rounds": 3, "correct_every": 0},
        "recover/c": {"method": "recover", "exact_rounds": 2, "correct_every": 0, "warmup_rounds": 1},
    }
    plans["recover/d"] = plans["recover/c"] | {"estimate": "lbfgs"}
    for folder, removal in plans.items():
        (case / folder).mkdir(parents=True)
        removal["global_adapter"] = folder
        (case / folder / "removal.json").write_text(json.dumps({"removal": removal}))
    assert sorted(rs.adapters(case)) == [
        "recover K=2 T=off W=1", "recover K=2 T=off W=1 lbfgs", "recover K=3 T=off", "retrain"
    ]  # fmt: skip
    row = {"kinds": ["reused", "exact", "estimated", "exact"], "exact_rounds": 1, "correct_every": 0}
    rows = [{"seed": 0, "rows": {"recover": row | {"warmup_rounds": 1, "estimate": "lbfgs"}}}]
    (line,) = br._schedules(rows)
    assert "K = 1 exact, correction every off, warm-up 1, estimate lbfgs; replayed rounds reused" in line
