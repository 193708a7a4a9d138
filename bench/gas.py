"""Gas per call and per participant per round of the Consortium contract.

    .venv/bin/python bench/gas.py --sizes 20 --seeds 20   # the default flow at 20: everyone seeds
    .venv/bin/python bench/gas.py            # embedded EVM (gas is identical on anvil)
    .venv/bin/python bench/gas.py --anvil    # the same on a local anvil node

The printed tables are also written to bench/results/gas.md (`--out`).

For 5, 20 and 100 registered participants it plays rounds in which every role does its part
(seed commit-reveal by `--seeds` participants, all proposers commit, one candidate, all voters
commit and reveal), and prints the gas of each call and the round total divided by the number of
participants and of roles. The first round writes fresh storage slots; later rounds reuse them
(the steady state a long run sees), so both are shown.

Who is drawn moves every call's gas after the draw (which slots a finalize writes, whose balance is
new), and the draw follows the block hashes. The embedded EVM is seeded (`--chain-seeds`, default 0 1 2
3 4: blocks and hashes independent of the wall clock), so the figures are reproducible; the tables are
the first seed's, and the steady per-participant figure is given for every seed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import sys
from collections import defaultdict
from contextlib import ExitStack, redirect_stdout
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consortium.chain import (
    AnvilNode,
    ChainClient,
    EmbeddedBackend,
    Params,
    Phase,
    RpcBackend,
    Vote,
    find_anvil,
)

ETH = 10**18
# roles per round for each participant count (proposers, voters): the default config's
# (`ChainSection.roles`: voters half the participants, a tenth spare); at most 32 + 32
ROLES = {5: (3, 2), 20: (8, 10), 100: (32, 32)}


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def params_for(n_proposers: int, n_voters: int, seeds: int = 0) -> Params:
    span = n_proposers + n_voters + 4  # one transaction per block on a dev chain
    return Params(
        min_stake=ETH,
        seed_blocks=max(12, seeds + 2),
        commit_blocks=span,
        candidate_blocks=4,
        vote_commit_blocks=span,
        vote_reveal_blocks=span,
        exit_cooldown=4,
        n_proposers=n_proposers,
        n_voters=n_voters,
        reward_per_round=ETH // 10,
        slash_rejected_bps=1000,
        slash_minority_bps=500,
        slash_no_show_bps=200,
        quorum_bps=5000,
    )


def play(c: ChainClient, gas: dict[str, list[int]], seeds: int, label: str) -> int:
    """One round where everybody shows up; returns its total gas."""
    total = 0

    def rec(name: str, tx_gas: int) -> None:
        nonlocal total
        gas[name].append(tx_gas)
        total += tx_gas

    rec("open_round", c.open_round(c.global_hash()).gas_used)
    rid = c.round_info().round_id
    people = c.participant_addresses()[:seeds]
    for who in people:  # round 1 only: later commitments ride on the previous round's reveal
        if c.as_account(who).precommitted_seed(rid) is None:
            rec("commit_seed", c.as_account(who).commit_seed(rid, h(f"{label}{rid}{who}")).gas_used)
    c.advance_to_phase(Phase.SEED_REVEAL)
    for who in people:
        rec("reveal_seed", c.as_account(who).reveal_seed(rid, next_seed=h(f"{label}{rid + 1}{who}")).gas_used)
    c.advance_to_phase(Phase.DRAW)
    rec("draw", c.draw().gas_used)
    props, voters = c.roles()
    for i, p in enumerate(props):
        rec("commit", c.as_account(p).commit(rid, h(f"{label}{rid}u{i}"), f"file:///store/{i:064x}").gas_used)
    c.advance_to_phase(Phase.CANDIDATE)
    rec("post_candidate", c.post_candidate(rid, h(f"{label}{rid}agg"), 0).gas_used)
    c.advance_to_phase(Phase.VOTE_COMMIT)
    for v in voters:
        rec("commit_vote", c.as_account(v).commit_vote(rid, Vote(1, 0, h(v))).gas_used)
    c.advance_to_phase(Phase.VOTE_REVEAL)
    for v in voters:
        rec("reveal_vote", c.as_account(v).reveal_vote(rid).gas_used)
    c.advance_to_phase(Phase.FINALIZE)
    rec("finalize", c.finalize().gas_used)
    return total


def no_show_finalize(c: ChainClient) -> int:
    """finalize's heaviest path: every role slashed, each slash updating the draw tree."""
    c.open_round(c.global_hash())
    c.advance_to_phase(Phase.DRAW)
    c.draw()
    c.advance_to_phase(Phase.FINALIZE)
    return c.finalize().gas_used


def bench(backend: object, n: int, rounds: int, seeds: int) -> int:
    """Play `rounds` rounds and the one-off calls, print the tables; the steady gas per participant."""
    np, nv = ROLES[n]
    accounts = backend.accounts  # type: ignore[attr-defined]
    c = ChainClient.deploy(
        backend,
        params_for(np, nv, seeds),
        h("genesis"),
        fund=100 * ETH,  # type: ignore[arg-type]
        account=accounts[0],
    )
    once: dict[str, list[int]] = defaultdict(list)
    deployed = c.history().events[0].tx_hash
    once["deploy"].append(int(c.w3.eth.get_transaction_receipt(deployed)["gasUsed"]))
    for i, a in enumerate(accounts[1 : n + 1]):
        once["register"].append(c.as_account(a).register((2 + i % 7) * ETH).gas_used)
    per_round = [defaultdict(list) for _ in range(rounds)]
    totals = [play(c.as_account(accounts[1]), per_round[k], seeds, f"n{n}") for k in range(rounds)]
    worst = no_show_finalize(c.as_account(accounts[1]))
    who = c.as_account(accounts[n])
    once["top_up"].append(who.top_up(ETH).gas_used)
    once["announce_exit"].append(who.announce_exit().gas_used)
    c.mine(5)
    once["complete_exit"].append(who.complete_exit().gas_used)
    once["withdraw"].append(who.withdraw(ETH).gas_used)
    # a removal of the last participant from round 1 (its proof: every round's base so far), approved by
    # the others in turn until they hold more than two thirds of the others' stake, then executed
    proposer = c.as_account(accounts[1])
    once["propose_removal"].append(proposer.propose_removal(accounts[n - 1], 1).gas_used)
    for a in accounts[2 : n - 1]:
        if proposer.pending_removal() is None:
            break
        rm = proposer.history().removals[-1]
        if rm.supported(*proposer.removal_support(rm)):
            break
        once["approve_removal"].append(c.as_account(a).approve_removal(rm.removal_id).gas_used)
    once["execute_removal"].append(proposer.execute_removal().gas_used)

    print(f"\n## {n} participants, {np} proposers + {nv} voters per round, {seeds} seed contributors")
    print(f"{'call':<16}{'first round':>14}{'later rounds':>14}   (median gas per call)")
    for name in per_round[0]:
        first = int(statistics.median(per_round[0][name]))
        rest = [v for r in per_round[1:] for v in r[name]]
        later = f"{int(statistics.median(rest)):,}" if rest else "-"
        print(f"{name:<16}{first:>14,}{later:>14}")
    print(f"{'call':<16}{'min':>14}{'max':>14}")
    for name, vals in once.items():
        print(f"{name:<16}{min(vals):>14,}{max(vals):>14,}")
    first, steady = totals[0], totals[-1]
    print(f"round total: first {first:,}, steady {steady:,}")
    print(f"per participant per round: first {first // n:,}, steady {steady // n:,}")
    print(f"per role per round:        first {first // (np + nv):,}, steady {steady // (np + nv):,}")
    print(f"worst-case finalize (every role a no-show, all {np + nv} slashed): {worst:,}")
    return steady // n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anvil", action="store_true", help="run on a local anvil instead of the embedded EVM")
    ap.add_argument("--sizes", type=int, nargs="*", default=sorted(ROLES), choices=sorted(ROLES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="participants contributing seed entropy each round (optional: 0 = block hash only)",
    )
    ap.add_argument("--chain-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="embedded EVM seeds")
    ap.add_argument("--out", type=Path, default=Path("bench/results/gas.md"))
    args = ap.parse_args()
    buf = io.StringIO()
    with ExitStack() as stack, redirect_stdout(_Tee(sys.stdout, buf)):
        print(f"# Gas: `python bench/gas.py {' '.join(sys.argv[1:])}`\n")
        seeded = f"Embedded EVM (py-evm, cancun), seeded ({args.chain_seeds[0]} for the tables)"
        where = "anvil" if args.anvil else seeded
        print(f"{where}; gas does not depend on machine load. Stakes 2..8 ETH.")
        for n in args.sizes:
            if args.anvil:
                binary = find_anvil()
                if binary is None:
                    sys.exit("anvil not found: make install (npm install --prefix .tools @foundry-rs/anvil)")
                node = stack.enter_context(AnvilNode(binary, n_accounts=n + 1))
                backend: object = RpcBackend(node.url, dev=True)
                bench(backend, n, args.rounds, args.seeds)
                continue
            steady = []
            for k, chain_seed in enumerate(args.chain_seeds):
                with redirect_stdout(io.StringIO()) if k else ExitStack():  # the first seed's tables only
                    steady.append(bench(EmbeddedBackend(n + 1, seed=chain_seed), n, args.rounds, args.seeds))
            print(
                f"steady per participant per round, chain seeds {args.chain_seeds}: "
                f"{', '.join(f'{v:,}' for v in steady)}; mean {statistics.mean(steady):,.0f}, "
                f"max {max(steady):,}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(buf.getvalue())


class _Tee(io.TextIOBase):
    """Print to the terminal and keep a copy for the results file."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)


if __name__ == "__main__":
    main()
