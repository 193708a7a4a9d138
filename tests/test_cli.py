"""`consortium run` end to end on the smoke preset, and the errors a user sees for bad input."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app

runner = CliRunner()
FAST = ["--set", "rounds=1", "--set", "data.n_train=16", "--set", "data.n_test=2"]


def _run(out: Path, *args: str):
    return runner.invoke(app, ["run", "--preset", "smoke", "--out", str(out), *args])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    res = _run(out)
    assert res.exit_code == 0, res.output
    (run_dir,) = out.iterdir()
    return run_dir


def test_smoke_run_writes_a_complete_run_directory(smoke_run: Path) -> None:
    for name in ("config.toml", "report.json", "report.md", "run.log", "adapter/adapter_config.json"):
        assert (smoke_run / name).is_file(), name
    for plot in ("accuracy_per_round", "cross_domain", "loss_curves"):
        assert (smoke_run / "plots" / f"{plot}.png").stat().st_size > 1000
    report = json.loads((smoke_run / "report.json").read_text())
    assert report["status"] == "complete" and report["rounds_completed"] == 2
    for model in ("base", "isolated", "federated"):
        acc = report["accuracy"][model]
        assert set(acc) == {"arithmetic", "units", "dates", "strings", "mean"}
        assert all(0.0 <= v <= 1.0 for v in acc.values())
    assert report["bytes"]["upload_per_participant_per_round"] > 4 * report["bytes"]["trainable_params"]
    assert len(report["cross_domain"]) == 5  # four isolated participants + the federated model
    # every round's blobs are in the store, named by their hash
    for rnd in report["rounds_detail"]:
        for c in rnd["commitments"]:
            assert (smoke_run / "store" / c["blob"][:2] / c["blob"]).is_file()


def test_same_seed_gives_identical_adapter_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert _run(out, *FAST, "--set", "eval.isolated_baseline=false").exit_code == 0
    (ra,), (rb,) = list(a.iterdir()), list(b.iterdir())
    blob = "adapter/adapter_model.safetensors"
    assert (ra / blob).read_bytes() == (rb / blob).read_bytes()
    ja, jb = (json.loads((r / "report.json").read_text()) for r in (ra, rb))
    assert ja["global_adapter"] == jb["global_adapter"]
    c = tmp_path / "c"
    assert _run(c, *FAST, "--set", "eval.isolated_baseline=false", "--set", "seed=1").exit_code == 0
    (rc,) = list(c.iterdir())
    assert json.loads((rc / "report.json").read_text())["global_adapter"] != ja["global_adapter"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "rounds=-1"], "rounds: Input should be greater than or equal to 1"),
        (["--set", "nope=3"], "nope: unknown key"),
        (["--set", 'data.jsonl=["/no/such.jsonl"]'], "data.jsonl.0: Path does not point to a file"),
        (["--preset", "huge"], "unknown preset 'huge'"),
    ],
)
def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "runs"), *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()


def test_bad_data_line_names_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "clinic.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    res = _run(tmp_path / "runs", "--set", f'data.jsonl=["{data}"]')
    assert res.exit_code == 2
    assert f"{data}:2:" in res.output
    assert not (tmp_path / "runs").exists()


def test_user_jsonl_becomes_a_domain(tmp_path: Path) -> None:
    data = tmp_path / "clinic.jsonl"
    rows = [{"prompt": f"Code for ward {i}?", "response": f"W{i}"} for i in range(10)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _run(
        tmp_path / "runs", *FAST, "--set", "eval.isolated_baseline=false", "--set", f'data.jsonl=["{data}"]'
    )
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "clinic" in json.loads((run_dir / "report.json").read_text())["accuracy"]["federated"]


def test_ctrl_c_leaves_a_consistent_marked_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from consortium.config import load_config
    from consortium.train import LocalTrainer

    real, calls = LocalTrainer.train, []
    proposers, _ = load_config(preset="smoke").chain.roles(4)  # local trainings a round

    def interrupt_in_round_two(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == proposers + 1:  # round 2's first local training
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LocalTrainer, "train", interrupt_in_round_two)
    res = _run(tmp_path / "runs", "--set", "data.n_train=16", "--set", "data.n_test=2")
    assert res.exit_code == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "interrupted" and report["rounds_completed"] == 1
    assert report["global_adapter"] == report["rounds_detail"][0]["global_out"]
    assert "interrupted" in (run_dir / "report.md").read_text()
    assert not list(run_dir.rglob(".*tmp*"))  # no half-written temp files


def test_attacked_run_reports_backdoor_flags_and_defence_time(tmp_path: Path) -> None:
    res = _run(
        tmp_path,
        *FAST,
        "--set", "participants=5",
        "--set", 'attacks=[{kind="backdoor", fraction=0.2}, {kind="noise", fraction=0.2, std=1.0}]',
        "--set", "aggregator=multi_krum",
        "--set", "defense.f=1",
        "--set", "seed=0",  # a draw in which the noisy participant proposes (asserted below)
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (run_dir,) = tmp_path.iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    assert sorted(report["attackers"].values()) == ["backdoor", "noise"]
    (noisy,) = [n for n, k in report["attackers"].items() if k == "noise"]
    (rnd,) = report["rounds_detail"]
    assert noisy in rnd["weights"], "the seed no longer draws the noisy participant as a proposer"
    # std 1.0 noise is far from every trained update: Multi-Krum leaves it out (on the chain that is an
    # exclusion: no reward and the proposal bond, not the slash; only evidence such as the screen's
    # verdict is flagged)
    assert noisy in rnd["excluded"] and noisy not in rnd["flagged"]
    assert rnd["weights"][noisy] == 0.0 and rnd["defense_seconds"] > 0
    (bd,) = rnd["backdoor"]
    assert bd["trigger"] == "cf-zeta" and 0.0 <= bd["asr"] <= 1.0 and 0.0 <= bd["false_trigger"] <= 1.0
    assert report["backdoor"]["base"][0]["asr"] == 0.0
    for plot in ("flags", "backdoor"):
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 1000
    assert "## Attacks and defence" in (run_dir / "report.md").read_text()


def test_check_prints_the_resolved_config_and_its_digest(tmp_path: Path) -> None:
    from consortium.config import config_digest, load_config

    res = runner.invoke(app, ["check", "--preset", "smoke", "--set", "rounds=3"])
    assert res.exit_code == 0, res.output
    digest = config_digest(load_config(preset="smoke", overrides=["rounds=3"]))
    assert f"# digest {digest}" in res.output and "rounds = 3" in res.output
    assert "chain protocol" in res.output and "aggregator 'fedavg'" in res.output
    assert res.output.rstrip().endswith("config ok")
    assert not list(tmp_path.iterdir())  # it wrote nothing


@pytest.mark.parametrize(
    ("overrides", "blocking", "warned"),
    [
        (["participants=10"], "colluders in 2 of the 5 voting seats", False),
        (["participants=10", "chain.proposers_vote=true"], "colluders in 5 of the 9 voting seats", False),
        (["participants=8", "chain.n_voters=3"], "colluders in 1 of the 3 voting seats", True),
    ],
)
def test_check_says_how_many_colluding_seats_block_a_round(
    overrides: list[str], blocking: str, warned: bool
) -> None:
    """With 3 drawn voters of 8 equal stakes, one colluder leaves the honest two at 2/8 of the stake:
    not over a third of the draw's weight, so every round a colluder votes in is rejected."""
    args = ["check", "--preset", "smoke"]
    for o in overrides:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"with equal stakes, {blocking} block a round" in res.output
    assert ("# warning: one colluding voter" in res.output) == warned


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        (["participants=10"], False),  # plain FedAvg: the candidates differ only on empty or replayed updates
        (["participants=10", "aggregator=krum"], True),
        (["participants=10", "aggregator=median"], True),  # a colluder may propose the plain mean instead
        (["participants=10", "aggregator=krum", "chain.proposers_vote=true"], False),
        (["participants=10", "aggregator=krum", "protocol=central"], False),  # no vote to block
    ],
)
def test_check_warns_that_colluders_block_a_screen_the_proposers_do_not_vote_on(
    overrides: list[str], warned: bool
) -> None:
    """The chain cells of the bench preset: behind the probe, two colluding voters of five rejected 3-5
    rounds of 10 by voting for their proposer's unscreened candidate; the committee closed it."""
    args = ["check", "--preset", "smoke"]
    for o in overrides:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    warning = "colluders in 2 of the 5 voter seats can vote for a colluding proposer's unscreened candidate"
    assert (warning in res.output) == warned
    assert ("set chain.proposers_vote (then 5 of 9 seats)" in res.output) == warned


def test_a_probe_on_chain_is_a_screen_the_committee_should_vote_on() -> None:
    from consortium.check import _screen_warnings
    from consortium.config import load_config

    probe = [f'probe.artifact="{"ab" * 32}"', 'probe.dir="probes"', "participants=10"]
    (warning,) = _screen_warnings(load_config(preset="smoke", overrides=probe))
    assert warning.startswith("the round's updates are screened (probe abababababab) and the proposers")
    assert not _screen_warnings(load_config(preset="smoke", overrides=[*probe, "chain.proposers_vote=true"]))


@pytest.mark.parametrize("proposers_vote", [False, True])
@pytest.mark.parametrize(("proposers", "voters"), [(4, 5), (5, 3), (3, 2), (8, 12), (1, 1), (10, 3)])
def test_blocking_seats_is_the_contracts_tally(proposers: int, voters: int, proposers_vote: bool) -> None:
    """`blocking_seats` against the audit's recomputation of `finalize` (`Tally.of`): k colluding seats
    vote for a candidate of their own, the rest for the honest one, every seat revealing."""
    from types import SimpleNamespace

    from consortium.audit.settlement import Tally
    from consortium.config_sections import blocking_seats

    owners = [f"p{i}" for i in range(proposers + voters)]
    seats = owners if proposers_vote else owners[proposers:]
    k, n = blocking_seats(proposers, voters, proposers_vote)
    assert n == len(seats)
    for colluders in range(len(seats) + 1):
        votes = {s: SimpleNamespace(choice=2 if i < colluders else 1, weight=1) for i, s in enumerate(seats)}
        rec = SimpleNamespace(owners=owners, weights=[1] * len(owners), voters=seats, votes=votes)
        assert (Tally.of(rec, quorum_bps=5_000).winner == 1) == (colluders < k), colluders


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["rounds=0"], "rounds"),
        (["aggregator=nope"], "aggregator"),
        (["aggregator=fltrust"], "fltrust"),  # a combination the chain protocol refuses
        (["probe.artifact=" + "a" * 64, "probe.dir=/nonexistent"], "a" * 12),  # the probe file is checked
        (["participants=40", "data.n_train=10"], "org"),  # the chain's held-out split needs 2 examples each
    ],
)
def test_check_refuses_what_a_run_would_refuse(overrides: list[str], named: str) -> None:
    args = ["check", "--preset", "smoke"]
    for o in overrides:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and named in res.output and "Traceback" not in res.output


def test_version() -> None:
    from consortium import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"consortium {__version__}"
