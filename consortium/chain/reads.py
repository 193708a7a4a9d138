"""The read side of `ChainClient`: views of the contract, decoded into `types`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak
from web3 import Web3

from .types import Params, ParticipantInfo, RoundInfo

MASK96 = 2**96 - 1  # the contract packs two versions of a weight; the latest is the low 96 bits


@dataclass(frozen=True)
class _View:
    selector: bytes
    inputs: list[str]
    outputs: list[dict[str, Any]]
    output_types: list[str]


def _view_abi(contract: Any, name: str) -> _View:
    """The view `name` of a web3 contract object, worked out once per contract object."""
    cache: dict[str, _View] = contract.__dict__.setdefault("_consortium_views", {})
    if name not in cache:
        fn = next(e for e in contract.abi if e.get("type") == "function" and e["name"] == name)
        inputs = [_abi_type(i) for i in fn["inputs"]]
        selector = keccak(text=f"{name}({','.join(inputs)})")[:4]
        cache[name] = _View(selector, inputs, fn["outputs"], [_abi_type(o) for o in fn["outputs"]])
    return cache[name]


def _abi_type(entry: dict[str, Any]) -> str:
    """The canonical type of an ABI entry (tuples spelled out from their components)."""
    t = entry["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in entry["components"]) + ")" + t[len("tuple") :]
    return t


def _normalise(entry: dict[str, Any], value: Any) -> Any:
    """What web3 returns for a decoded value: addresses checksummed, containers as eth_abi gives them."""
    t = entry["type"]
    if t.endswith("]"):
        inner = {**entry, "type": t[: t.rindex("[")]}
        return type(value)(_normalise(inner, v) for v in value)
    if t == "tuple":
        return tuple(_normalise(c, v) for c, v in zip(entry["components"], value, strict=True))
    if t == "address":
        return Web3.to_checksum_address(value)
    return value


def direct_call(tester: Any, contract: Any, name: str, args: tuple[Any, ...], sender: str, block: Any) -> Any:
    """A view call straight to eth-tester, returning what web3's `.call()` returns."""
    view = _view_abi(contract, name)
    data = view.selector + abi_encode(view.inputs, list(args))
    raw = tester.call({"from": sender, "to": contract.address, "data": "0x" + data.hex()}, block)
    values = abi_decode(view.output_types, bytes.fromhex(raw[2:]))
    normalised = [_normalise(o, v) for o, v in zip(view.outputs, values, strict=True)]
    return normalised[0] if len(normalised) == 1 else tuple(normalised)


class ChainReads:
    """Mixed into ChainClient: needs `contract`, `backend`, `address` and `_s.params`."""

    contract: Any
    backend: Any
    address: str
    _s: Any

    def _read(self, name: str, *args: Any, block: int | str = "latest") -> Any:
        """A view call; an explicit funded `from` spares eth-tester's costly sender guess (and its
        balance check, which fails for a contract or an empty account). On the embedded EVM the call
        goes to eth-tester directly (`direct_call`): web3's request formatting cost a third of a read."""
        accounts = self.backend.accounts
        sender = accounts[0] if accounts else self.address
        if self.backend.kind == "embedded":
            from eth_tester.exceptions import TransactionFailed  # the embedded EVM's own package

            try:
                return direct_call(self.backend.tester, self.contract, name, args, sender, block)
            except TransactionFailed:  # a revert: web3's path raises it as every caller expects
                pass
        return getattr(self.contract.functions, name)(*args).call({"from": sender}, block_identifier=block)

    def params(self) -> Params:
        if self._s.params is None:
            self._s.params = Params(*self._read("params"))
        return self._s.params

    def round_info(self, block: int | str = "latest") -> RoundInfo:
        t = self._read("round_info", block=block)
        return RoundInfo(*t, seed_blocks=self.params().seed_blocks)

    def participant(self, who: str | None = None, block: int | str = "latest") -> ParticipantInfo:
        addr = Web3.to_checksum_address(who or self.address)
        return _participant_info(addr, self._read("participants", addr, block=block))

    def all_participants(self, block: int | str = "latest") -> list[ParticipantInfo]:
        """Every participant ever registered, by index, in as few calls as possible."""
        owners = self.participant_addresses()
        out: list[ParticipantInfo] = []
        while len(out) < len(owners):
            page = self._read("participant_states", len(out) + 1, 128, block=block)
            if not page:
                break
            out += [_participant_info(owners[len(out) + i], t) for i, t in enumerate(page)]
        return out

    def roles(self) -> tuple[list[str], list[str]]:
        """(proposers, voters) of the current round in slot order (empty before the draw)."""
        props, voters = self._read("roles")
        return list(props), list(voters)

    def proposers(self) -> list[str]:
        return self.roles()[0]

    def voters(self) -> list[str]:
        return self.roles()[1]

    def candidates(self) -> list[tuple[bytes, int, int]]:
        """(hash, flagged bitmask, excluded bitmask) of this round's candidates, candidate k at k-1."""
        n = self.round_info().n_candidates
        return [
            (
                bytes(self._read("candidate_hashes", i)),
                int(self._read("candidate_flags", i)),
                int(self._read("candidate_excluded", i)),
            )
            for i in range(n)
        ]

    def global_hash(self, block: int | str = "latest") -> bytes:
        return bytes(self._read("global_hash", block=block))

    def reward_pool(self, block: int | str = "latest") -> int:
        return int(self._read("reward_pool", block=block))

    def contract_balance(self, block: int | str = "latest") -> int:
        return int(self.w3.eth.get_balance(self.contract.address, block_identifier=block))

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def n_participants(self) -> int:
        """Participant indices handed out so far (exited ones keep theirs)."""
        return int(self._read("n_indices"))

    def participant_addresses(self) -> list[str]:
        """Every address that ever registered, by participant index."""
        out: list[str] = []
        while True:
            page = list(self._read("participant_list", len(out) + 1, 256))
            out += page
            if len(page) < 256:
                return out

    def weight_of_prefix(self, i: int) -> int:
        """Sum of the latest draw weights of participant indices 1..i."""
        return int(self._read("weight_of_prefix", i))

    def total_weight(self) -> int:
        """Sum of the latest draw weights: what the next round's draw reads."""
        return int(self._read("total_weight"))

    def draw_weight(self) -> int:
        """The total weight of the current round's draw: a winner needs more than a third of it."""
        return int(self._read("draw_weight"))


def _participant_info(addr: str, t: Any) -> ParticipantInfo:
    stake, balance, index, weight, exit_block, registered, role, data_size = t
    return ParticipantInfo(
        addr,
        stake,
        balance,
        index,
        weight & MASK96,
        exit_block,
        registered,
        role >> 32,
        (role >> 24) & 255,
        (role >> 16) & 255,
        (role >> 8) & 255,
        role & 255,
        data_size,
    )
