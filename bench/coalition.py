"""The coalition game on the contract itself: can a coalition holding a share of the stake get its own
candidate accepted? No model is trained: who wins a round depends only on the draw and the votes.

Each cell deploys the contract with the default config's parameters for `--participants` equal stakes
(`consortium.deploy.config_params`: roles, stakes, slashes, quorum) on the embedded EVM and plays
`--rounds` rounds. Every round an honest participant opens it and contributes a seed; every proposer
commits; an honest participant posts the honest (recomputed) candidate and, when the coalition has a
member, a coalition member posts the coalition's; honest voters vote for the honest candidate (they
never vote for one that differs from their own recomputation), coalition voters for the coalition's;
everyone reveals. Per share: rounds won by each side, rejected rounds (the coalition blocks the honest
candidate), how often the rule before issue 22 (a strict majority of the revealed weight) would have
accepted the coalition's candidate on the same votes, any honest participant slashed, and the rounds
drawn with fewer roles because slashes left fewer participants eligible than roles (or cancelled).

    python bench/coalition.py                       # 10..50% coalitions, 60 rounds each
    python bench/coalition.py --shares 0.3 --rounds 100
    python bench/coalition.py --proposers-vote --tag committee   # the proposers vote too

With `--proposers-vote` (`chain.proposers_vote`) every proposer also holds a voting seat and votes with its
side, so the seats hold (proposers + voters) / participants of the stake.

Results: bench/results/coalition.md and coalition.json (`--tag T`: coalition_T.*).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import git_commit

SHARES = (0.1, 0.2, 0.3, 0.35, 0.4, 0.5)


def _h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def play(share: float, n: int, rounds: int, proposers_vote: bool = False) -> dict[str, Any]:
    """One cell: `rounds` rounds with a coalition of round(share * n) of n equal stakes."""
    from consortium.chain import ChainClient, EmbeddedBackend, Outcome, wei
    from consortium.chain.driver import (
        Posting,
        ballots,
        commit_updates,
        open_to_draw,
        post_candidates,
        vote_and_finalize,
    )
    from consortium.config import load_config
    from consortium.deploy import config_params

    overrides = [f"participants={n}", f"chain.proposers_vote={str(proposers_vote).lower()}"]
    cfg = load_config(preset="smoke", overrides=overrides)
    params = config_params(cfg)
    backend = EmbeddedBackend(n + 1)
    op = ChainClient.deploy(backend, params, _h("genesis"), fund=wei(cfg.chain.reward_pool))
    people = backend.accounts[1 : n + 1]
    for a in people:
        op.as_account(a).register(wei(cfg.chain.stake))
    coalition = set(people[: round(share * n)])
    honest = [a for a in people if a not in coalition]
    c = op.as_account(honest[0])
    tally = {"honest": 0, "coalition": 0, "rejected": 0, "no_quorum": 0, "cancelled": 0}
    old_rule_coalition = 0
    honest_slashed: list[tuple[int, str, int, str]] = []
    coalition_voter_seats: list[int] = []
    shapes: list[tuple[int, int]] = []  # (proposers, seats) of each drawn round: fewer when few are eligible
    full = (params.n_proposers, params.n_voters + (params.n_proposers if proposers_vote else 0))
    t0 = time.perf_counter()
    for _ in range(rounds):
        rid = open_to_draw(c, [c.address])
        c.draw()
        props, voters = c.roles()
        if not voters:
            tally["cancelled"] += 1
            continue
        shapes.append((len(props), len(voters)))
        commit_updates(c, rid, props, f"{rid}-", "cas:x")
        postings = [Posting(c.address, _h(f"honest-{rid}"))]
        if coalition:
            postings.append(Posting(sorted(coalition)[0], _h(f"coalition-{rid}")))
        post_candidates(c, rid, postings)
        vote_and_finalize(c, rid, ballots(voters, {v: 2 for v in voters if v in coalition}))
        rec = c.history().round(rid)
        weight = {v.lower(): b.weight for v, b in rec.votes.items()}
        bad_weight = sum(w for v, w in weight.items() if v in {a.lower() for a in coalition})
        coalition_voter_seats.append(sum(1 for v in voters if v in coalition))
        if coalition and bad_weight * 2 > sum(weight.values()):
            old_rule_coalition += 1
        if rec.outcome == Outcome.ACCEPTED:
            tally["coalition" if rec.winner == 2 else "honest"] += 1
        elif rec.outcome == Outcome.NO_QUORUM:
            tally["no_quorum"] += 1
        else:
            tally["rejected"] += 1
        honest_slashed += [(rid, w, amt, r.name) for w, amt, r in rec.slashes if w not in coalition]
    stakes = {a: c.participant(a).stake + c.participant(a).balance for a in people}
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {
        "share": share,
        "members": len(coalition),
        "participants": n,
        "proposers": params.n_proposers,
        "voters": params.n_voters,
        "proposers_vote": proposers_vote,
        "rounds": rounds,
        "outcomes": tally,
        "old_rule_coalition_wins": old_rule_coalition,
        "coalition_voter_seats_mean": mean(coalition_voter_seats),
        "coalition_voter_seats_max": max(coalition_voter_seats, default=0),
        "shrunk_rounds": sum(1 for sh in shapes if sh != full),
        "fewest_roles": list(min(shapes, key=sum)) if shapes else None,
        "honest_slashed": honest_slashed,
        "honest_end_eth_mean": mean([stakes[a] / 1e18 for a in honest]),
        "coalition_end_eth_mean": mean([stakes[a] / 1e18 for a in coalition]),
        "stake_eth": cfg.chain.stake,
        "seconds": time.perf_counter() - t0,
    }


def markdown(cells: list[dict[str, Any]], cmd: str, commit: str | None) -> str:
    first = cells[0]
    lines = [
        "# The coalition game on the contract (issue 22, item 6)",
        "",
        f"`{cmd}` at commit {commit or '?'}: {first['participants']} equal stakes of "
        f"{first['stake_eth']} ETH, {first['proposers']} proposers and {first['voters']} voters a round",
        f"(the default config's roles{', the proposers voting too' if first.get('proposers_vote') else ''}), "
        f"{first['rounds']} rounds per share, embedded EVM, draw seeds from",
        "the chain (deterministic per run).",
        "No model is trained: honest voters vote for the honest (recomputed) candidate, coalition voters",
        "for the coalition's; everyone reveals. A winner needs a strict majority of the revealed weight",
        "and more than a third of the draw's weight. 'old rule': the coalition's candidate would have won",
        "under the rule before issue 22 (a strict majority of the revealed weight) on the same votes.",
        "",
        "A round with fewer eligible participants than roles draws everyone eligible ('shrunk': the",
        "fewest proposers / voting seats of a round in brackets); only below two is it cancelled.",
        "",
        "| coalition | members | honest won | coalition won | rejected | no quorum | cancelled | shrunk "
        "| old rule: coalition won | coalition voter seats mean / max | honest slashed "
        "| end ETH honest / coalition |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        o = c["outcomes"]
        seats = f"{c['coalition_voter_seats_mean']:.1f} / {c['coalition_voter_seats_max']}"
        eth = f"{c['honest_end_eth_mean']:.2f} / {c['coalition_end_eth_mean']:.2f}"
        won = f"{o['honest']} | {o['coalition']} | {o['rejected']} | {o['no_quorum']} | {o['cancelled']}"
        fewest = c.get("fewest_roles")
        shrunk = f"{c.get('shrunk_rounds', 0)}" + (
            f" ({fewest[0]} / {fewest[1]})" if c.get("shrunk_rounds") and fewest else ""
        )
        lines.append(
            f"| {100 * c['share']:.0f}% | {c['members']} | {won} | {shrunk} "
            f"| {c['old_rule_coalition_wins']} | {seats} "
            f"| {len(c['honest_slashed'])} | {eth} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--shares", default=",".join(map(str, SHARES)))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--proposers-vote", action="store_true", help="chain.proposers_vote: proposers vote too")
    args = ap.parse_args(argv)
    shares = [float(s) for s in args.shares.split(",") if s]
    with cf.ProcessPoolExecutor(args.jobs) as pool:
        n = len(shares)
        cells = list(
            pool.map(play, shares, [args.participants] * n, [args.rounds] * n, [args.proposers_vote] * n)
        )
    stem = "coalition" + (f"_{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    commit = git_commit()
    cmd = "python bench/coalition.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / f"{stem}.json").write_text(json.dumps({"cells": cells, "commit": commit}, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(cells, cmd.strip(), commit))
    print(markdown(cells, cmd.strip(), commit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
