"""The dashboard of a live network: the same page built from public records only, what any member can
see: the contract's events over JSON-RPC and the blob store. Nothing private is shown (accuracy, loss
and ε live in each member's own evaluation; gas would need every receipt): those charts are absent.

Participants are named `p<index>` by their registration index (the chain knows addresses, not names).
A node that cannot be reached is one problem on the page and in the terminal, retried at every poll.
"""

from __future__ import annotations

from typing import Any

from consortium.store import BlobNotFound, IntegrityError, open_store

from .blobs import safetensors_header
from .charts import charts, participant_colours
from .removal_view import ETH, mark_undone, network_removals, round_entry

EVENT_PHASES = {
    "RoundOpened": "open",
    "SeedCommitted": "seed",
    "SeedRevealed": "seed",
    "RoundDrawn": "draw",
    "UpdateCommitted": "commits",
    "CandidatePosted": "candidates",
    "VoteCommitted": "votes",
    "VoteRevealed": "votes",
    "Rewarded": "outcome",
    "Slashed": "outcome",
    "RoundFinalized": "outcome",
}
CHAIN_PHASES = {  # consortium.chain.Phase, by value
    0: "idle", 1: "seed", 2: "seed", 3: "draw", 4: "commits", 5: "candidates", 6: "votes", 7: "votes",
    8: "outcome (waiting for finalize)",
}  # fmt: skip


class LiveChain:
    """One deployment's public records; the client is (re)made on demand so an outage heals itself."""

    def __init__(self, rpc_url: str, contract: str, store: str | None) -> None:
        self.rpc_url, self.contract, self.store_uri = rpc_url, contract, store
        self._client: Any = None
        self._stakes: dict[int, dict[str, float]] = {}  # finalized round id -> stakes after it (final)

    @property
    def where(self) -> str:
        return f"--rpc-url {self.rpc_url} --contract {self.contract}"

    def client(self) -> Any:
        if self._client is None:
            from consortium.chain import (  # web3 (the chain extra): only a live network's page needs it
                ChainClient,
                RpcBackend,
            )

            client = ChainClient.at(RpcBackend(self.rpc_url, timeout=10), self.contract)
            client.params()  # no contract there: fails now, not half way through a page
            self._client = client
        return self._client

    def version(self) -> str:
        try:
            return f"block-{self.client().w3.eth.block_number}"
        except Exception as e:
            self._client = None
            return f"unreachable-{type(e).__name__}"

    def build(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": "", "run_dir": f"live network: {self.where}", "problems": [],
            "seconds_since_change": None, "run": None, "rounds": [], "in_progress": None, "charts": [],
            "audit": None, "events": [], "removals": [],
        }  # fmt: skip
        try:
            client = self.client()
            history = client.history()
            head = client.w3.eth.get_block("latest")
            info = client.round_info()
        except Exception as e:
            self._client = None
            state["problems"].append(
                f"{self.where}: node unreachable or no contract there ({type(e).__name__}: {e})"
            )
            return state
        from consortium.chain.history import build_history  # web3: see `client`

        names = {a: f"p{p.index}" for a, p in history.participants.items()}
        events = history.events
        finals = [i for i, e in enumerate(events) if e.name == "RoundFinalized"]
        opened = next((i for i, e in enumerate(events) if e.name == "RoundOpened"), len(events))
        initial = {names[a]: p.stake / ETH for a, p in build_history(events[:opened]).participants.items()}
        for i in finals:
            rid = int(events[i].args["round_id"])
            if rid not in self._stakes:
                after = build_history(events[: i + 1]).participants
                self._stakes[rid] = {names[a]: p.stake / ETH for a, p in after.items()}
        phases = _phases(events, names)
        rounds = [
            _round(rec, names, self._stakes.get(rec.round_id, {}), phases.get(rec.round_id, {}))
            for rec in history.rounds
            if rec.outcome is not None
        ]
        strategies = dict.fromkeys(sorted(names.values(), key=lambda n: int(n[1:])), "unknown")
        colours = participant_colours(strategies, set())
        accounts = {n: a for a, n in names.items()}
        state["run"] = {
            "name": "live network", "status": "live", "model": None, "lora_variant": None,
            "protocol": "chain (live network, public records)", "aggregator": None, "server_lr": None,
            "rounds": len(history.rounds), "rounds_completed": len(rounds), "participants": len(names),
            "global_adapter": history.global_hash.hex(), "error": None, "accuracy": {}, "bytes": {},
            "timings": {}, "privacy": None, "defense": None, "attacks": [],
            "chain": {"backend": self.rpc_url, "contract": self.contract, "stake": None, "head": None},
            "head": {"block": int(head["number"]), "hash": head["hash"].hex()},
            "participants_detail": [
                {"name": n, "strategy": "unknown", "colour": colours[n], "domains": [], "examples": None,
                 "account": accounts[n]}
                for n in strategies
            ],
        }  # fmt: skip
        state["removals"] = network_removals(history, names)
        mark_undone(rounds, state["removals"])
        state["rounds"] = rounds
        current = history.rounds[-1] if history.rounds else None
        if current is not None and current.outcome is None:
            phase = CHAIN_PHASES.get(int(info.phase), str(info.phase))
            state["in_progress"] = {"round": current.round_id, "phase": phase,
                                    "phases": phases.get(current.round_id, {})}  # fmt: skip
        report = {
            "chain": {"stake": None, "strategies": strategies},
            "accuracy": {},
            "participants": len(names),
        }
        state["charts"] = [c for c in charts(report, rounds, colours) if c["id"] == "stakes"]
        if state["charts"] and rounds:
            for s in state["charts"][0]["series"]:
                s["values"][0] = initial.get(s["label"].split()[0])
        state["events"] = [
            {"block": e.block, "log_index": e.log_index, "event": e.name, "tx_hash": e.tx_hash,
             "args": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in e.args.items()}}
            for e in events
        ]  # fmt: skip
        return state

    def blob(self, digest: str) -> dict[str, Any]:
        """The blob from the network's store, verified by `ContentStore.get`."""
        if not self.store_uri:
            return {"hash": digest, "present": None, "error": "no --store given"}
        try:
            data = open_store(self.store_uri).get(digest)
        except BlobNotFound:
            return {"hash": digest, "present": False}
        except IntegrityError as e:
            return {"hash": digest, "present": True, "hash_ok": False, "error": str(e)}
        except Exception as e:
            return {"hash": digest, "present": None, "error": f"store unreachable: {type(e).__name__}: {e}"}
        return {"hash": digest, "present": True, "hash_ok": True, "bytes": len(data)} | safetensors_header(
            data
        )


def _phases(events: list[Any], names: dict[str, str]) -> dict[int, dict[str, Any]]:
    """Round id -> phase -> its blocks, event count and who acted (as `rundir_view.group_rounds`)."""
    out: dict[int, dict[str, Any]] = {}
    for e in events:
        phase = EVENT_PHASES.get(e.name)
        rid = e.args.get("round_id")
        if phase is None or rid is None:
            continue
        p = out.setdefault(int(rid), {}).setdefault(
            phase, {"first_block": e.block, "last_block": e.block, "txs": 0, "reverted": 0, "from": []}
        )
        p["last_block"] = e.block
        p["txs"] += 1
        who = names.get(e.args.get("who") or e.args.get("opener") or "")
        if who and who not in p["from"]:
            p["from"].append(who)
    # in protocol order: round r + 1's seed commitment is made with round r's reveal, before r + 1 opens
    order = {phase: i for i, phase in enumerate(dict.fromkeys(EVENT_PHASES.values()))}
    return {rid: dict(sorted(ph.items(), key=lambda kv: order[kv[0]])) for rid, ph in out.items()}


def _round(
    rec: Any, names: dict[str, str], stakes: dict[str, float], phases: dict[str, Any]
) -> dict[str, Any]:
    """One finalized round as the page's round entry (the fields a run directory's report has)."""

    def n(a: str) -> str:
        return names.get(a, a)

    win = rec.candidates[rec.winner - 1] if rec.winner else None
    commitments = []
    for who, c in sorted(rec.commits.items(), key=lambda kv: kv[1].slot):
        head, _, query = c.uri.partition("?")
        fields = dict(part.partition("=")[::2] for part in query.split("&"))
        blob = head.removeprefix("cas:") if head.startswith("cas:") else c.update_hash.hex()
        count = fields.get("n", "")
        digits = count.isascii() and count.isdigit()  # "²".isdigit(), but int("²") raises
        commitments.append(
            {"participant": n(who), "blob": blob, "n_examples": int(count) if digits else None}
        )
    slot = {i: n(p) for i, p in enumerate(rec.proposers)}
    return round_entry(
        rec.round_id, round_id=rec.round_id, outcome=rec.outcome.name.lower(),
        proposers=[n(a) for a in rec.proposers], voters=[n(a) for a in rec.voters],
        votes={n(v): {"choice": x.choice, "flags": [slot[i] for i in slot if (x.flags >> i) & 1]}
               for v, x in rec.votes.items()},
        flagged=[n(a) for a in win.flagged_addresses] if win else [],
        excluded=[n(a) for a in win.excluded_addresses] if win else [],
        slashes=[{"who": n(a), "eth": amount / ETH, "reason": reason.name.lower()}
                 for a, amount, reason in rec.slashes],
        rewards={n(a): v / ETH for a, v in rec.rewards.items()}, stakes=stakes,
        global_in=rec.base_hash.hex(), global_out=(rec.global_hash or rec.base_hash).hex(),
        candidates=[{"number": c.number, "poster": n(c.poster), "hash": c.candidate_hash.hex(),
                     "flagged": [n(a) for a in c.flagged_addresses],
                     "excluded": [n(a) for a in c.excluded_addresses]} for c in rec.candidates],
        commitments=commitments, phases=phases,
    )  # fmt: skip
