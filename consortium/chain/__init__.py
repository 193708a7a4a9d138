"""The trust layer: the Consortium contract (Vyper) and its typed web3.py client.

Embedded EVM by default (`EmbeddedBackend`), any JSON-RPC node with `RpcBackend(url)`.
"""

from .backends import AnvilNode, Backend, EmbeddedBackend, RpcBackend, connect, find_anvil
from .client import ChainClient
from .commitments import seed_commitment, to_bytes32, vote_commitment
from .draw import MIN_ELIGIBLE, draw_indices, draw_roles, round_seed, round_shape, xor_seeds
from .errors import ChainError, ContractVersionError
from .history import (
    Commit,
    Event,
    History,
    ParticipantRecord,
    PostedCandidate,
    Removal,
    RevealedVote,
    RoundRecord,
)
from .txlog import TxLog, head, read_txlog
from .txreplay import Replay, replay
from .types import (
    ETH,
    BallotTx,
    Outcome,
    Params,
    ParticipantInfo,
    Phase,
    RoundInfo,
    RoundState,
    SlashReason,
    Tx,
    Vote,
    to_eth,
    wei,
)

__all__ = [
    "ETH",
    "MIN_ELIGIBLE",
    "AnvilNode",
    "Backend",
    "BallotTx",
    "ChainClient",
    "ChainError",
    "Commit",
    "ContractVersionError",
    "EmbeddedBackend",
    "Event",
    "History",
    "Outcome",
    "Params",
    "ParticipantInfo",
    "ParticipantRecord",
    "Phase",
    "PostedCandidate",
    "Removal",
    "Replay",
    "RevealedVote",
    "RoundInfo",
    "RoundRecord",
    "RoundState",
    "RpcBackend",
    "SlashReason",
    "Tx",
    "TxLog",
    "Vote",
    "connect",
    "draw_indices",
    "draw_roles",
    "find_anvil",
    "head",
    "read_txlog",
    "replay",
    "round_seed",
    "round_shape",
    "seed_commitment",
    "to_bytes32",
    "to_eth",
    "vote_commitment",
    "wei",
    "xor_seeds",
]
