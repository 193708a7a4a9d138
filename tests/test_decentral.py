"""The decentralised round end to end on the embedded EVM, and the audit that recomputes it.

One run (tiny-warm model, 8 organisations, a backdoor poisoner and a stale free rider, Multi-Krum behind the
screen) is shared by the tests of this module; each tamper test audits its own copy of the run directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from consortium.audit import AuditInputError, audit_run
from consortium.config import load_config
from consortium.defense import AggregateResult
from consortium.round.pipeline import Candidate, candidate_marks
from consortium.round.records import commit_uri
from consortium.rundir import TXLOG
from consortium.sim import Simulation

E2E = [
    # every round is accepted (below: the proposers vote), and Multi-Krum leaves an update out of each,
    # which the bond test needs; the free rider is drawn among the 5 proposers of 8 in some round of 5 on
    # any draw but one in 140 ((3/8)^5), and seed 0 draws it here
    "seed=0",
    "participants=8",
    "rounds=5",
    "aggregator=multi_krum",
    "model.name=tiny-warm",  # a random-init model's updates carry no signal to tell a backdoor by
    "data.n_train=40",
    "data.n_test=10",
    "train.local_steps=4",
    "train.lr=1e-2",
    'attacks=[{kind="backdoor", fraction=0.125}, {kind="free_rider", fraction=0.125}]',
    # voters' private judgements with wide margins: tiny-warm's held-out loss drifts by a few percent a
    # round, right across the default 2% tolerance, and a vote that float-level differences can flip
    # would make every later draw machine-dependent. Evidence (the screen's flags) still decides slashes.
    "chain.accept_tolerance=0.5",
    "chain.flag_loss_margin=5.0",
    # 5 proposers, so that Multi-Krum (f = (n - 3) // 2) leaves one out every round; 3 voters of 8 hold
    # over a third of the stake, as a winner needs
    "chain.n_proposers=5",
    "chain.n_voters=3",
    # the proposers vote too: without them one colluding voter of the three blocks the round (on a Zen 4
    # machine it blocked 4 of 5), and which rounds it blocks follows the draws, which follow the block
    # hashes, which hold the commitments to trained updates: another CPU's rounding. With all 8 seats
    # voting the coalition's 2 block nothing (config_sections.blocking_seats: it takes 4), on every machine
    "chain.proposers_vote=true",
]


def _run(tmp: Path, overrides: list[str]) -> tuple[Path, dict]:
    cfg = load_config(preset="smoke", overrides=overrides)
    path = Simulation(cfg, Console(quiet=True)).run(tmp, plots=False)
    return path, json.loads((path / "report.json").read_text())


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _run(tmp_path_factory.mktemp("attacked"), E2E)


def _worth(report: dict, name: str) -> float:
    last = report["rounds_detail"][-1]
    return last["stakes"][name] + last["balances"][name]


def test_evidence_is_slashed_and_honest_work_is_not(attacked: tuple[Path, dict]) -> None:
    """What the protocol guarantees on every machine (the run's voters judge with wide margins, so no
    float-level difference decides a vote, and with the proposers voting the coalition's 2 seats of 8
    block nothing): every round is accepted with the screened candidate; the screen flags a replayed
    update every time it is sent and the flag costs its sender stake; only flagged proposers and
    excluded updates are slashed, no honest voter is outvoted; an honest organisation that was never
    slashed ends with at least its stake. An update the accepted candidate excludes costs only the
    proposal bond (tests/chain/test_chain_bond.py: why an always-excluded poisoner loses)."""
    _, report = attacked
    strategies = report["chain"]["strategies"]
    stake = report["chain"]["stake"]
    coalition = {n for n, s in strategies.items() if s != "honest"}
    assert sorted(strategies[n] for n in coalition) == ["backdoor", "free_rider"]
    free_rider = next(n for n in coalition if strategies[n] == "free_rider")
    rounds = report["rounds_detail"]
    assert [r["outcome"] for r in rounds] == ["accepted"] * len(rounds)
    assert any(free_rider in r["proposers"] for r in rounds)  # what the rest needs (E2E: why seed 0)
    slashed: dict[str, list[str]] = {n: [] for n in strategies}
    for r in rounds:
        assert set(r["proposers"]) <= set(r["voters"])  # the proposers hold seats
        winner = next(c for c in r["candidates"] if c["hash"] == r["global_out"])
        assert winner["poster"] not in coalition, r["round"]
        if free_rider in r["proposers"]:  # its replayed / empty update is evidence, and costs it, every time
            assert free_rider in r["flagged"]
            assert {"who": free_rider, "reason": "rejected"} in [
                {"who": c["who"], "reason": c["reason"]} for c in r["slashes"]
            ], r["slashes"]
        for cut in r["slashes"]:
            slashed[cut["who"]].append(cut["reason"])
            if cut["reason"] == "rejected":
                assert cut["who"] in r["flagged"], cut
            elif cut["reason"] == "minority":
                assert cut["who"] in coalition, cut  # honest seats vote the winner: the recomputed one
            elif cut["reason"] == "excluded":  # the proposal bond of an update left out
                assert cut["who"] in r["excluded"], cut
            else:
                assert cut["reason"] == "no_show", cut
        assert sum(r["gas"].values()) > 0
    assert _worth(report, free_rider) < stake
    for name, s in strategies.items():
        if s == "honest":
            assert "rejected" not in slashed[name], name  # an honest update is never evidence
            if not slashed[name]:
                assert _worth(report, name) >= stake, name


def test_aggregator_exclusions_forfeit_the_bond_and_earn_nothing(attacked: tuple[Path, dict]) -> None:
    _, report = attacked
    rounds = report["rounds_detail"]
    bond_bps = report["chain"]["params"]["proposal_bond_bps"]
    assert any(r["excluded"] for r in rounds) and bond_bps > 0  # Multi-Krum leaves some out every round
    before = dict.fromkeys(report["chain"]["strategies"], report["chain"]["stake"])
    for r in rounds:
        assert not set(r["excluded"]) & set(r["flagged"])
        for who in r["excluded"]:  # as a proposer (a voting proposer is settled as a voter too)
            # rewards are equal shares a rewarded role: its vote's share at most, none for its update
            assert r["rewards"].get(who, 0.0) <= min(r["rewards"].values(), default=0.0), (r["round"], who)
            cuts = [s for s in r["slashes"] if s["who"] == who and s["reason"] not in ("minority", "no_show")]
            if r["outcome"] != "accepted":
                assert not cuts
                continue
            assert [s["reason"] for s in cuts] == ["excluded"]
            assert cuts[0]["eth"] == pytest.approx(before[who] * bond_bps / 10_000, rel=1e-9)
        before = r["stakes"]


def test_flagged_and_excluded_updates_carry_no_weight(attacked: tuple[Path, dict]) -> None:
    """The accepted aggregate is built from the kept updates only (its value is the audit's business)."""
    _, report = attacked
    for r in report["rounds_detail"]:
        assert set(r["weights"]) == {c["participant"] for c in r["commitments"]}
        for name in set(r["flagged"]) | set(r["excluded"]):
            assert r["weights"][name] == 0.0, (r["round"], name)
        assert sum(r["weights"].values()) == pytest.approx(1.0)


def test_audit_passes_on_the_untouched_run(attacked: tuple[Path, dict]) -> None:
    path, _ = attacked
    result = audit_run(path)
    assert result.ok, result.problems
    assert result.checked["candidates recomputed"] == 5
    assert result.checked["role draws"] == 5


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / src.name
    shutil.copytree(src, dst)
    return dst


def _blob(run: Path, digest: str) -> Path:
    return run / "store" / digest[:2] / digest


def test_audit_names_a_flipped_byte_in_a_stored_update(attacked: tuple[Path, dict], tmp_path: Path) -> None:
    path, report = attacked
    run = _copy(path, tmp_path)
    honest = {n for n, s in report["chain"]["strategies"].items() if s == "honest"}
    # an honest update (a free rider's replay can be byte-identical to the global model's blob)
    c = next(c for c in report["rounds_detail"][1]["commitments"] if c["participant"] in honest)
    blob = _blob(run, c["blob"])
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0x01
    blob.write_bytes(bytes(data))
    problems = audit_run(run).problems
    assert any(f"round 2: {c['participant']}" in p and "does not match its commitment" in p for p in problems)


def test_audit_names_two_swapped_updates(attacked: tuple[Path, dict], tmp_path: Path) -> None:
    path, report = attacked
    run = _copy(path, tmp_path)
    commitments = report["rounds_detail"][0]["commitments"]
    honest = [c for c in commitments if c["participant"] not in report["attackers"]]
    a, b = honest[:2]  # two trained updates (a free rider's zero update is the genesis adapter's blob)
    pa, pb = _blob(run, a["blob"]), _blob(run, b["blob"])
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    problems = audit_run(run).problems
    for c in (a, b):
        assert any(f"round 1: {c['participant']}" in p and c["blob"] in p for p in problems), problems


def test_audit_names_an_edited_vote(attacked: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = attacked
    run = _copy(path, tmp_path)
    log = run / TXLOG
    lines = log.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"function":"reveal_vote"' in line)
    entry = json.loads(lines[i])
    data = entry["data"]  # selector, round id, choice, flags, salt: flip the choice word's last digit
    word = 10 + 64 * 2 - 1
    entry["data"] = data[:word] + ("1" if data[word] != "1" else "2") + data[word + 1 :]
    lines[i] = json.dumps(entry, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    problems = audit_run(run).problems
    assert any(f"txlog line {i + 1}: reveal_vote" in p for p in problems), problems


def test_audit_names_a_changed_config(attacked: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = attacked
    run = _copy(path, tmp_path)
    cfg = run / "config.toml"
    cfg.write_text(cfg.read_text().replace('aggregator = "multi_krum"', 'aggregator = "fedavg"'))
    problems = audit_run(run).problems
    assert any("round 1: " in p and "committed under config" in p for p in problems), problems


def test_audit_names_a_truncated_transaction_log(attacked: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = attacked
    run = _copy(path, tmp_path)
    log = run / TXLOG
    lines = log.read_text().splitlines()
    # cut right after the last draw: that round is played but never finalized, whatever the rounds'
    # outcomes (a cut between rounds that left the global model unchanged would name only the head)
    draws = [i for i, line in enumerate(lines) if json.loads(line).get("function") == "draw"]
    log.write_text("\n".join(lines[: draws[-1] + 1]) + "\n")
    problems = audit_run(run).problems
    assert any(p.startswith("chain head:") for p in problems), problems
    assert any("never finalized" in p for p in problems), problems


def test_audit_refuses_a_run_of_another_contract_version(attacked: tuple[Path, dict], tmp_path: Path) -> None:
    """A run made before a contract change: its log deploys code this checkout's ABI would misread (here
    one byte of the runtime changed). One clear line (`audit` exits 2), not a decoding traceback."""
    from consortium.chain.artifact import load_artifact

    path, _ = attacked
    run = _copy(path, tmp_path)
    log = run / TXLOG
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    deploy = next(e for e in entries if e.get("kind") == "tx" and e["to"] is None)
    runtime = load_artifact()["bytecode_runtime"].removeprefix("0x")
    at = deploy["data"].index(runtime) + len(runtime) // 2
    data = deploy["data"]
    deploy["data"] = data[:at] + ("0" if data[at] != "0" else "1") + data[at + 1 :]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    with pytest.raises(AuditInputError, match=r"not built from this version of Consortium\.vy"):
        audit_run(run)


def test_audit_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="not a run directory"):
        audit_run(tmp_path / "nowhere")
    (tmp_path / "config.toml").write_text("participants = 'many'\n")
    with pytest.raises(AuditInputError, match=r"config\.toml"):
        audit_run(tmp_path)


def test_no_show_and_lazy_voters_pay(tmp_path: Path) -> None:
    """A no-show is slashed for every role it skips; a lazy voter votes without looking."""
    path, report = _run(
        tmp_path,
        [
            "participants=6",
            "rounds=3",
            "chain.n_voters=3",
            'strategies=[{kind="no_show", fraction=0.17}, {kind="lazy_voter", fraction=0.17}]',
        ],
    )
    strategies = report["chain"]["strategies"]
    no_show = next(n for n, s in strategies.items() if s == "no_show")
    lazy = next(n for n, s in strategies.items() if s == "lazy_voter")
    for r in report["rounds_detail"]:
        if no_show in r["proposers"] + r["voters"]:
            assert {"who": no_show, "reason": "no_show"}.items() <= next(
                s for s in r["slashes"] if s["who"] == no_show
            ).items()
            assert no_show not in [c["participant"] for c in r["commitments"]] and no_show not in r["votes"]
        if lazy in r["voters"]:
            assert lazy not in r["judgements"] and r["votes"][lazy]["choice"] == 1
    assert _worth(report, no_show) < report["chain"]["stake"]
    assert audit_run(path).ok


def test_a_participant_slashed_out_does_not_halt_the_consortium(tmp_path: Path) -> None:
    """6 participants, 6 roles (no spare): the no-show loses its whole stake the first time it is
    drawn. Every later round draws the five left instead of being cancelled, and the audit recomputes
    those smaller draws."""
    path, report = _run(
        tmp_path,
        [
            "participants=6",
            "rounds=3",
            "chain.slash_no_show_bps=10000",
            'strategies=[{kind="no_show", fraction=0.17}]',
        ],
    )
    no_show = next(n for n, s in report["chain"]["strategies"].items() if s == "no_show")
    first, *later = report["rounds_detail"]
    assert len(first["proposers"]) + len(first["voters"]) == 6  # everyone, the no-show included
    assert any(s["who"] == no_show and s["reason"] == "no_show" for s in first["slashes"])
    for r in later:
        assert r["outcome"] != "cancelled"
        assert no_show not in r["proposers"] + r["voters"]
        assert len(r["proposers"]) + len(r["voters"]) == 5
    assert audit_run(path).ok


STALL = [
    "seed=0",  # a seed whose drawn voters include colluders (the draws follow the contract bytecode)
    "participants=9",
    "rounds=4",
    "aggregator=multi_krum",
    "data.n_train=24",
    "data.n_test=4",
    "train.local_steps=2",
    'attacks=[{kind="backdoor", fraction=0.34}]',
    "chain.accept_tolerance=0.5",
    "chain.flag_loss_margin=5.0",
]


def test_the_colluders_of_a_screened_round_stall_drawn_voters_but_not_a_committee(tmp_path: Path) -> None:
    """The stall of issue 23's chain cells, on tiny-warm: three colluding attackers of nine (a third of
    the stake, never more: they cannot win) post the unscreened candidate and vote for it whenever one of
    them proposes (Multi-Krum leaves an update out every round, so the two candidates differ). With the
    4 drawn voters alone, one colluder among them leaves the honest ones at most a third of the stake:
    rounds are rejected. Under `proposers_vote` every one of the 9 holds a seat, the honest seats hold
    two thirds, and no round is rejected; the audit recomputes every seat's pay."""
    _, blocked = _run(tmp_path / "voters", [*STALL, "chain.proposers_vote=false"])
    assert "rejected" in [r["outcome"] for r in blocked["rounds_detail"]]
    path, report = _run(tmp_path / "committee", [*STALL, "chain.proposers_vote=true"])
    rounds = report["rounds_detail"]
    assert len(report["chain"]["coalition"]) == 3
    assert sum(len(r["candidates"]) == 2 for r in rounds) >= 2  # the coalition posted and voted its own
    assert [r["outcome"] for r in rounds] == ["accepted"] * len(rounds)
    for r in rounds:
        assert set(r["proposers"]) <= set(r["voters"]) and set(r["votes"]) == set(r["voters"])
    assert audit_run(path).ok


def _commit(blob: str, n: int = 1) -> SimpleNamespace:
    return SimpleNamespace(uri=commit_uri(blob, n, "cfg"), update_hash=bytes.fromhex(blob))


def test_an_unavailable_or_malformed_blob_is_a_flagged_no_show(tmp_path: Path) -> None:
    """A committed blob that is of the wrong shape or dtype, not finite or not safetensors, and a
    malformed commit URI, are left out of the aggregate (weight 0) and flagged; a blob missing or corrupt
    in the store (one party's view of availability) is left out and only excluded (`round.availability`).
    By the chain simulator's runner exactly as by a node and the audit (all call `round.chain_view`)."""
    from consortium.chain_sim import ChainRoundRunner
    from consortium.round.pipeline import AggregationRule
    from consortium.round.records import put_vector
    from consortium.round.voting import VoteRule
    from consortium.store import BlobStore

    store, layout = BlobStore(tmp_path), [("w", (4,))]
    genesis = put_vector(store, torch.zeros(4), layout)
    ok, bad = put_vector(store, torch.ones(4), layout), put_vector(store, torch.full((4,), 9.0), layout)
    path = store.root / bad[:2] / bad
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    shape = store.put_tensors({"w": torch.ones(5)})
    dtype = store.put_tensors({"w": torch.ones(4, dtype=torch.float64)})
    nan = store.put_tensors({"w": torch.tensor([1.0, float("nan"), 0.0, 0.0])})
    junk = store.put(b"\xff" * 64)  # correctly hashed, not safetensors
    commits = {"0xA": ok, "0xB": "0" * 64, "0xC": bad, "0xD": shape, "0xE": dtype, "0xF": nan, "0xG": junk}
    uris = {  # commit URIs `commit_uri` never writes: evidence against the proposer, not a voided round
        "0xH": f"cas:{ok}?n=\u00b2&config=cfg",  # "²".isdigit(), but int("²") raises
        "0xI": f"cas:{ok}?n=0&config=cfg",
        "0xJ": "junk",
        "0xK": commit_uri("ab" * 32, 1, "cfg"),  # names another blob than the commitment
    }
    rec = SimpleNamespace(
        commits={a: _commit(b) for a, b in commits.items()}
        | {a: SimpleNamespace(uri=u, update_hash=bytes.fromhex(ok)) for a, u in uris.items()},
        seed=b"\x00" * 32,
        base_hash=bytes.fromhex(genesis),
        outcome=None,
        global_hash=None,
    )
    runner = ChainRoundRunner(
        None,  # type: ignore[arg-type]  # the candidate never touches the chain
        {n: f"0x{n.upper()}" for n in "abcdefghijk"},
        dict.fromkeys("abcdefghijk", "honest"),
        store,
        layout,
        AggregationRule(),
        VoteRule(),
    )
    rc = runner.candidate(rec)
    invalid = ["0xB", "0xC", "0xD", "0xE", "0xF", "0xG", "0xH", "0xI", "0xJ", "0xK"]
    assert sorted(rc.committed.invalid) == invalid
    assert rc.committed.unavailable == {"0xB", "0xC"} and rc.excluded == ["0xB", "0xC"]
    assert rc.flagged == invalid[2:] and rc.error is None
    assert rc.candidate is not None and rc.candidate.clients == ["0xA"]
    assert torch.equal(rc.candidate.vector, torch.ones(4))


def test_a_rejected_round_is_reported_as_rejected(tmp_path: Path) -> None:
    """REJECTED is outcome 0 on chain: it must not read as 'no outcome'."""
    from consortium.chain import Outcome
    from consortium.chain_sim import ChainRoundReport, ChainRoundRunner
    from consortium.round.pipeline import AggregationRule
    from consortium.round.voting import VoteRule
    from consortium.store import BlobStore

    rec = SimpleNamespace(outcome=Outcome.REJECTED, global_hash=None, rewards={}, slashes=[])
    chain = SimpleNamespace(history=lambda: SimpleNamespace(round=lambda rid: rec))
    runner = ChainRoundRunner(chain, {}, {}, BlobStore(tmp_path), [], AggregationRule(), VoteRule())  # type: ignore[arg-type]
    out = ChainRoundReport(1, "a" * 64, "a" * 64, "")
    runner._record_outcome(out)
    assert (out.outcome, out.global_out) == ("rejected", "a" * 64)
    rec.outcome = None
    runner._record_outcome(out)
    assert out.outcome == "no_quorum"


def test_audit_names_a_corrupt_global_model(attacked: tuple[Path, dict], tmp_path: Path) -> None:
    path, report = attacked
    run = _copy(path, tmp_path)
    rounds = report["rounds_detail"]
    genesis = rounds[0]["global_in"]  # corrupt the first global model after it (the genesis is checked first)
    later = [r for r in rounds if r["global_in"] != genesis]
    # the draws decide which rounds are accepted; where none before the last is, the genesis is the only
    # global model a round reads, and the audit names it first
    r = later[0] if later else rounds[0]
    blob = _blob(run, r["global_in"])
    blob.write_bytes(blob.read_bytes()[:-1])
    problems = audit_run(run).problems
    named = f"round {r['round_id']}: the candidate cannot be recomputed"
    assert any(named in p or (not later and p.startswith("genesis")) for p in problems), problems


def test_candidate_marks_split_evidence_from_exclusion() -> None:
    flags = torch.tensor([True, True, False, True])
    weights = torch.tensor([0.0, 0.0, 1.0, 0.0])
    result = AggregateResult(torch.zeros(2), weights, flags, {"screened": {"a": "empty"}})
    cand = Candidate(torch.zeros(2), ["a", "b", "c", "d"], result, 0.0)
    assert candidate_marks(cand, ["e"]) == (["a", "e"], ["b", "d"])
    assert candidate_marks(cand, ["e"], slash_excluded=True) == (["a", "b", "d", "e"], [])


def test_a_probe_verdict_excludes_and_never_slashes() -> None:
    """A probe has a measured false-positive rate: what it alone drops is excluded (no reward, the
    proposal bond), not flagged as evidence; a proposer the screen drops too stays flagged."""
    flags = torch.tensor([True, True, True, False])
    screened = {"a": "empty update", "b": "probe weight 0.100 below 0.5", "c": "norm"}
    info = {"screened": screened, "probe_excluded": ["b"]}
    result = AggregateResult(torch.zeros(2), torch.tensor([0.0, 0.0, 0.0, 1.0]), flags, info)
    cand = Candidate(torch.zeros(2), ["a", "b", "c", "d"], result, 0.0)
    assert candidate_marks(cand, []) == (["a", "c"], ["b"])
