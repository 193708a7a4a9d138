"""Typed client for the Consortium contract, the same over the embedded EVM and JSON-RPC.

Every state-changing method returns a `Tx` or raises `ChainError(reason)`; reads return
dataclasses from `types`. `as_account(addr)` gives a client acting for another account. With a
`TxLog` (`deploy(..., txlog=)`, `at(..., txlog=)`) every transaction and mined block is logged
for `txlog.replay`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3

from .artifact import load_artifact
from .backends import Backend
from .commitments import base_path, seed_commitment, to_bytes32, vote_commitment
from .errors import ChainError, ContractVersionError, reason_from
from .history import History, HistoryReader, Removal
from .reads import ChainReads
from .sending import call_or_raise, replay_reason, transact_as
from .txlog import TxLog
from .types import BallotTx, Params, Phase, RoundInfo, Tx, Vote

GAS_LIMIT = 8_000_000  # explicit gas skips estimation; finalize of 64 roles needs under 4M


@dataclass
class _Shared:
    """State every `as_account` view of one deployment shares."""

    backend: Backend
    contract: Any
    deploy_block: int
    reader: HistoryReader
    ballots: dict[tuple[int, str], Vote] = field(default_factory=dict)
    seeds: dict[tuple[int, str], bytes] = field(default_factory=dict)
    params: Params | None = None
    tx_defaults: dict[str, int] | None = None
    txlog: TxLog | None = None  # every transaction and mine, for an exact replay


class ChainClient(ChainReads):
    """One account's view of a deployed Consortium contract."""

    def __init__(
        self, shared: _Shared, account: Any, preflight: bool | None = None, gas: int | None = GAS_LIMIT
    ) -> None:
        self._s = shared
        self._account = account  # an address the node signs for, or an eth_account LocalAccount
        self.address: str = account if isinstance(account, str) else account.address
        # simulate before sending so a revert costs no gas; the embedded EVM skips it for speed
        # and recovers the reason by replaying a failed transaction instead
        self.preflight = shared.backend.kind != "embedded" if preflight is None else preflight
        self.gas = gas

    # ------------------------------------------------------------------ construction

    @classmethod
    def deploy(
        cls,
        backend: Backend,
        params: Params | None = None,
        genesis_hash: bytes | str | None = None,
        fund: int = 0,
        account: Any = None,
        txlog: TxLog | None = None,
    ) -> ChainClient:
        """Deploy from the checked-in artifact; `fund` seeds the reward pool; `txlog` logs the
        deployment and everything sent through the client after it."""
        art = load_artifact()
        w3 = backend.w3
        acct = account or backend.accounts[0]
        sender = acct if isinstance(acct, str) else acct.address
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        p = params or Params()
        g = to_bytes32(genesis_hash) if genesis_hash is not None else b"\x00" * 32
        ctor = factory.constructor(p.as_tuple(), g)
        tx_hash, raw = transact_as(w3, ctor, acct, {"from": sender, "value": fund, "gas": GAS_LIMIT})
        rcpt = w3.eth.wait_for_transaction_receipt(tx_hash)
        if txlog is not None:
            txlog.tx(w3.eth.get_transaction(tx_hash), rcpt, "deploy", raw)
        if rcpt["status"] != 1:
            try:
                ctor.estimate_gas({"from": sender, "value": fund})
            except Exception as exc:
                reason = reason_from(exc)
                if reason is None:
                    raise
                raise ChainError(reason, function="deploy") from None
            raise ChainError("deployment failed", function="deploy")
        return cls.at(backend, rcpt["contractAddress"], acct, deploy_block=rcpt["blockNumber"], txlog=txlog)

    @classmethod
    def at(
        cls,
        backend: Backend,
        address: str,
        account: Any = None,
        deploy_block: int = 0,
        txlog: TxLog | None = None,
    ) -> ChainClient:
        """Attach to an existing deployment (`txlog`: log what is sent from here on). Refused
        (`ContractVersionError`) unless the code there is this artifact's: Vyper appends the immutables to
        the runtime code, so a deployment of this version starts with it."""
        art = load_artifact()
        checksum = Web3.to_checksum_address(address)
        code = bytes(backend.w3.eth.get_code(checksum))
        if not code.startswith(bytes.fromhex(art["bytecode_runtime"].removeprefix("0x"))):
            found = "a contract not built from this version of Consortium.vy"
            if not code:
                found = "no contract (wrong address or chain?)"
            raise ContractVersionError(
                f"{checksum}: {found} (this checkout's artifact: source sha256 {art['source_sha256'][:12]}, "
                f"vyper {art['vyper_version']}); a run made before a contract change is read with the "
                "consortium version that made it"
            )
        contract = backend.w3.eth.contract(address=checksum, abi=art["abi"])
        reader = HistoryReader(backend.w3, contract, deploy_block)
        shared = _Shared(backend, contract, deploy_block, reader, txlog=txlog)
        return cls(shared, account or backend.accounts[0])

    def as_account(self, account: Any) -> ChainClient:
        """The same deployment, acting as `account` (address or LocalAccount)."""
        return ChainClient(self._s, account, self.preflight, self.gas)

    @property
    def backend(self) -> Backend:
        return self._s.backend

    @property
    def w3(self) -> Web3:
        return self._s.backend.w3

    @property
    def contract(self) -> Any:
        return self._s.contract

    @property
    def contract_address(self) -> str:
        return str(self._s.contract.address)

    @property
    def chain_id(self) -> int:
        return self._tx_defaults()["chainId"]

    @property
    def txlog(self) -> TxLog | None:
        return self._s.txlog

    # ------------------------------------------------------------------ sending

    def _send(self, name: str, *args: Any, value: int = 0) -> Tx:
        return self.transact(getattr(self.contract.functions, name)(*args), value=value)

    def transact(self, fn: Any, value: int = 0) -> Tx:
        """Send any bound contract call (this contract's or another's) as this account; a revert
        anywhere in it raises ChainError."""
        name = str(fn.fn_name)
        tx: dict[str, Any] = {"from": self.address, "value": value, **self._tx_defaults()}
        if self.preflight:
            call_or_raise(fn, {"from": self.address, "value": value}, name, "pending")
        tx["gas"] = self.gas if self.gas is not None else self._estimate(fn, tx, name)
        try:
            tx_hash, raw = transact_as(self.w3, fn, self._account, tx)
        except Exception as exc:
            reason = reason_from(exc)
            if reason is None:
                raise
            raise ChainError(reason, function=name) from None
        rcpt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if self._s.txlog is not None:  # what the node got, fees included, reverted or not
            self._s.txlog.tx(self.w3.eth.get_transaction(tx_hash), rcpt, name, raw)
        if rcpt["status"] != 1:
            reason = replay_reason(fn, {"from": self.address, "value": value}, rcpt["blockNumber"])
            raise ChainError(reason, function=name, tx_hash=Web3.to_hex(tx_hash))
        return Tx(Web3.to_hex(tx_hash), rcpt["blockNumber"], rcpt["gasUsed"], name)

    def transfer(self, to: str, value: int, gas: int = 100_000) -> Tx:
        """Send plain ETH from this account (to fund a local key, say); logged like any other
        transaction, so a replay makes the same transfer."""
        tx: dict[str, Any] = {"from": self.address, "to": Web3.to_checksum_address(to), "value": value}
        tx |= {"gas": gas, **self._tx_defaults()}
        raw = None
        if isinstance(self._account, str):
            tx_hash = self.w3.eth.send_transaction(tx)  # type: ignore[arg-type]
        else:
            if "maxFeePerGas" not in tx:  # not a dev chain: caps as web3 would set them
                prio = int(self.w3.eth.max_priority_fee)
                base = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
                tx |= {"maxPriorityFeePerGas": prio, "maxFeePerGas": 2 * base + prio}
            tx["nonce"] = self.w3.eth.get_transaction_count(self.address)
            raw = bytes(self._account.sign_transaction(tx).raw_transaction)
            tx_hash = self.w3.eth.send_raw_transaction(raw)
        rcpt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if self._s.txlog is not None:
            self._s.txlog.tx(self.w3.eth.get_transaction(tx_hash), rcpt, "transfer", raw)
        if rcpt["status"] != 1:
            raise ChainError("transfer failed", function="transfer", tx_hash=Web3.to_hex(tx_hash))
        return Tx(Web3.to_hex(tx_hash), rcpt["blockNumber"], rcpt["gasUsed"], "transfer")

    def _tx_defaults(self) -> dict[str, int]:
        """Chain id always, and on a dev chain fixed fees: its base fee only falls (blocks stay
        under half full), so this spares web3 two look-ups per transaction."""
        if self._s.tx_defaults is None:
            d = {"chainId": int(self.w3.eth.chain_id)}
            if getattr(self.backend, "dev", False):
                base = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
                d |= {"maxPriorityFeePerGas": 10**9, "maxFeePerGas": 2 * base + 10**9}
            self._s.tx_defaults = d
        return self._s.tx_defaults

    def _estimate(self, fn: Any, tx: dict[str, Any], name: str) -> int:
        try:
            return int(fn.estimate_gas(tx) * 1.2) + 10_000
        except Exception as exc:
            reason = reason_from(exc)
            if reason is None:
                raise
            raise ChainError(reason, function=name) from None

    # ------------------------------------------------------------------ participants

    def register(self, stake: int, data_size: int = 0) -> Tx:
        """Stake and declare `data_size` training examples (0: none declared; see Consortium.register)."""
        return self._send("register", data_size, value=stake)

    def top_up(self, amount: int) -> Tx:
        return self._send("top_up", value=amount)

    def announce_exit(self) -> Tx:
        return self._send("announce_exit")

    def complete_exit(self) -> Tx:
        return self._send("complete_exit")

    def withdraw(self, amount: int) -> Tx:
        return self._send("withdraw", amount)

    def fund(self, amount: int) -> Tx:
        return self._send("fund", value=amount)

    # ------------------------------------------------------------------ rounds

    def open_round(self, base_hash: bytes | str) -> Tx:
        return self._send("open_round", to_bytes32(base_hash))

    def commit_seed(self, round_id: int, seed: bytes | None = None) -> Tx:
        """Commit a random seed (kept here for reveal_seed); optional entropy for the draw."""
        seed = seed if seed is not None else os.urandom(32)
        c = seed_commitment(self.chain_id, self.contract_address, round_id, self.address, seed)
        tx = self._send("commit_seed", round_id, c)
        self._s.seeds[(round_id, self.address)] = seed
        return tx

    def reveal_seed(self, round_id: int, seed: bytes | None = None, next_seed: bytes | None = None) -> Tx:
        """Reveal this round's seed; with `next_seed`, commit it for the next round in the same
        transaction (kept here for that round's reveal), which spares next round's commit_seed."""
        seed = seed if seed is not None else self._s.seeds.get((round_id, self.address), b"\x00" * 32)
        nxt = b"\x00" * 32
        if next_seed is not None:
            nxt = seed_commitment(self.chain_id, self.contract_address, round_id + 1, self.address, next_seed)
        tx = self._send("reveal_seed", round_id, seed, nxt)
        if next_seed is not None:
            self._s.seeds[(round_id + 1, self.address)] = next_seed
        return tx

    def precommitted_seed(self, round_id: int) -> bytes | None:
        """The seed this client committed for `round_id` in the previous round's reveal, if any."""
        return self._s.seeds.get((round_id, self.address))

    def draw(self) -> Tx:
        return self._send("draw")

    def commit(self, round_id: int, update_hash: bytes | str, uri: str) -> Tx:
        return self._send("commit", round_id, to_bytes32(update_hash), uri)

    def post_candidate(
        self,
        round_id: int,
        candidate_hash: bytes | str,
        flagged: Sequence[str] | int = (),
        excluded: Sequence[str] | int = (),
    ) -> Tx:
        """`flagged` (slashed if this candidate wins) and `excluded` (left out without evidence: not
        rewarded): proposer addresses, or bitmasks of proposer slots."""
        return self._send(
            "post_candidate",
            round_id,
            to_bytes32(candidate_hash),
            self.flag_mask(flagged),
            self.flag_mask(excluded),
        )

    def commit_vote(
        self,
        round_id: int,
        vote: Vote | int,
        flags: Sequence[str] | int = (),
        missing: Sequence[str] | int = (),
    ) -> BallotTx:
        """Commit a ballot (an int is the choice, with a fresh salt, `flags` and the proposers whose
        blob this voter reports `missing`); the result carries the Vote for the reveal, which this
        client also keeps."""
        if isinstance(vote, int):
            vote = Vote(vote, self.flag_mask(flags), os.urandom(32), self.flag_mask(missing))
        c = vote_commitment(self.chain_id, self.contract_address, round_id, self.address, vote)
        tx = self._send("commit_vote", round_id, c)
        self._s.ballots[(round_id, self.address)] = vote
        return BallotTx(tx.tx_hash, tx.block, tx.gas_used, tx.function, vote)

    def reveal_vote(self, round_id: int, vote: Vote | None = None) -> Tx:
        """Reveal `vote`, or the ballot this client committed for the round."""
        v = vote or self._s.ballots.get((round_id, self.address))
        if v is None:
            raise ChainError("no ballot kept for this round; pass the Vote", function="reveal_vote")
        return self._send("reveal_vote", round_id, v.choice, v.flags, v.missing, v.salt)

    def finalize(self) -> Tx:
        return self._send("finalize")

    def flag_mask(self, flagged: Sequence[str] | int) -> int:
        """Bitmask of proposer slots from proposer addresses."""
        if isinstance(flagged, int):
            return flagged
        slots = {a.lower(): i for i, a in enumerate(self.proposers())}
        mask = 0
        for a in flagged:
            if a.lower() not in slots:
                raise ValueError(f"{a} is not a proposer of the current round")
            mask |= 1 << slots[a.lower()]
        return mask

    # ------------------------------------------------------------------ blocks, snapshots, history

    def mine(self, n: int = 1) -> None:
        if n <= 0:
            return
        self.backend.mine(n)
        if self._s.txlog is not None:
            self._s.txlog.mine(n)

    def advance_to(self, block: int) -> None:
        """Mine empty blocks so that the next transaction lands in block `block` (or later)."""
        self.mine(block - 1 - self.block_number())

    def advance_to_phase(self, phase: Phase, info: RoundInfo | None = None) -> None:
        """Mine until the next transaction falls in `phase` of the current round (`info`: a
        round_info() already read for this round, to spare a call)."""
        r = info or self.round_info()
        start = {
            Phase.SEED_REVEAL: r.seed_block + 1,
            Phase.DRAW: r.draw_from,
            Phase.CANDIDATE: r.commit_end,
            Phase.VOTE_COMMIT: r.candidate_end,
            Phase.VOTE_REVEAL: r.vote_commit_end,
            Phase.FINALIZE: r.vote_reveal_end,
        }
        if phase not in start:
            raise ValueError(f"cannot advance to {phase.name}")
        self.advance_to(start[phase])

    def snapshot(self) -> Any:
        return self.backend.snapshot()

    def revert(self, snap: Any) -> None:
        """Back to a snapshot; history and kept ballots forget what came after it."""
        self.backend.revert(snap)
        head = self.block_number()
        self._s.reader.truncate(head)
        if self._s.txlog is not None:  # the log keeps what was undone; replay undoes it too
            self._s.txlog.revert(head)

    def history(self) -> History:
        """Rounds, roles, commitments, votes, outcomes and balances rebuilt from events only."""
        return self._s.reader.history()

    # ------------------------------------------------------------------ removal (docs/contract.md)

    def propose_removal(self, target: str, from_round: int) -> Tx:
        """Propose rebuilding the global model without `target` from round `from_round` on; the caller's
        approval counts unless it is the target. The proof the contract checks (the path before the
        round and the bases from it on) comes from the events."""
        bases = [r.base_hash for r in self.history().rounds]
        k = min(max(from_round - 1, 0), len(bases))
        args = (Web3.to_checksum_address(target), from_round, base_path(bases[:k]), bases[k:])
        return self._send("propose_removal", *args)

    def approve_removal(self, removal_id: int) -> Tx:
        return self._send("approve_removal", removal_id)

    def execute_removal(self) -> Tx:
        return self._send("execute_removal")

    def pending_removal(self) -> Removal | None:
        """The proposal that can still be approved and executed, as the events record it (None: none)."""
        target = self._read("removal_target")
        if int(target, 16) == 0 or self.round_info().round_id > int(self._read("removal_deadline")):
            return None
        return self.history().removals[int(self._read("removal_id")) - 1]

    def removal_support(self, removal: Removal, block: int | str = "latest") -> tuple[int, int]:
        """(the approvers' weight, the weight of everyone but the target): what `execute_removal` sums."""
        return removal.support({p.address: p.weight for p in self.all_participants(block)})

    def removed(self, who: str | None = None) -> bool:
        return bool(self._read("removed", Web3.to_checksum_address(who or self.address)))
