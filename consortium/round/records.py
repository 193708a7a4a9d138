"""The public records of a round: commitments, adapter blobs, commit URIs and the round's seed.

A blob is a safetensors file of named float32 tensors (the adapter's layout); a vector is those tensors
concatenated in layout order. The conversion is `consortium.vector` (torch only, shared with
`consortium.model`), so reading and checking records needs neither transformers nor a model (the audit, a
light node).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors.torch import load as st_load

from consortium.store import BlobStore, sha256_hex, tensors_to_bytes
from consortium.vector import flat_to_state, state_to_flat

Layout = Sequence[tuple[str, tuple[int, ...]]]


class ProtocolError(RuntimeError):
    """A step out of order or a record that breaks the protocol (double commit, missing blob, ...)."""


@dataclass(frozen=True)
class Commitment:
    """A participant's committed update: who, which blob, and the sample count it claims."""

    participant: str
    blob: str
    n_examples: int


def put_vector(store: BlobStore, vec: torch.Tensor, layout: Layout) -> str:
    """Store an adapter vector (global or update) as a safetensors blob named by its sha256."""
    return store.put_tensors(flat_to_state(vec, layout))


def get_vector(store: BlobStore, digest: str, layout: Layout) -> torch.Tensor:
    """Read a verified blob back into a vector, refusing bytes that are not safetensors and wrong tensor
    names, shapes or dtype (ProtocolError). BlobNotFound / IntegrityError / StoreUnavailable pass."""
    data = store.get(digest)
    try:
        state = st_load(data)
    except Exception as e:  # safetensors' own error type for any malformed header or body
        raise ProtocolError(f"blob {digest}: not a safetensors file ({type(e).__name__}: {e})") from None
    for name, t in sorted(state.items()):
        if t.dtype != torch.float32:
            raise ProtocolError(f"blob {digest}: {name} is {t.dtype}, expected torch.float32")
    try:
        return state_to_flat(state, layout)
    except ValueError as e:
        raise ProtocolError(f"blob {digest}: {e}") from None


def read_update(store: BlobStore, digest: str, layout: Layout) -> torch.Tensor:
    """A committed update as every participant and the audit accept it: `get_vector`, and finite.
    BlobNotFound / IntegrityError / ProtocolError: the proposer counts as a no-show (flagged)."""
    vec = get_vector(store, digest, layout)
    if not bool(torch.isfinite(vec).all()):
        raise ProtocolError(f"blob {digest}: {int((~torch.isfinite(vec)).sum())} non-finite values")
    return vec


def vector_hash(vec: torch.Tensor, layout: Layout) -> str:
    """The blob name a vector gets in the store, without writing it."""
    return sha256_hex(tensors_to_bytes(flat_to_state(vec, layout)))


def commit_uri(blob: str, n_examples: int, config: str) -> str:
    """Where the update lives, the sample count its proposer claims (FedAvg's weight) and the run
    config it trained under (`config_digest`, so a config edited after the run shows in the audit)."""
    return f"cas:{blob}?n={n_examples}&config={config}"


def put_update(
    store: BlobStore, delta: torch.Tensor, n_examples: int, layout: Layout, config: str
) -> tuple[str, str]:
    """A trained update put into the store: (its blob name, the URI its proposer commits on chain)."""
    blob = put_vector(store, delta, layout)
    return blob, commit_uri(blob, n_examples, config)


# ASCII only: str.isdigit() also accepts "²" and other digits int() refuses. A sample count is a
# positive integer of at most 18 digits (it stays exact as a float64 weight's input, never overflows).
_URI = re.compile(r"cas:([0-9a-f]{64})\?n=([1-9][0-9]{0,17})&config=([0-9A-Za-z]{1,64})", re.ASCII)


def parse_uri(uri: str) -> tuple[str, int, str]:
    """(blob, n_examples, config digest) from a commit URI; ProtocolError naming a malformed URI (any
    other form than the one `commit_uri` writes: the proposer's own fault, evidence against it)."""
    m = _URI.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise ProtocolError(
            f"commit URI {uri!r} is not 'cas:<sha256>?n=<examples, 1 to 18 digits>&config=<digest>'"
        )
    return m.group(1), int(m.group(2)), m.group(3)


def seed_int(seed: bytes) -> int:
    """The defence's public randomness for a round: the first 8 bytes of the contract's draw seed."""
    return int.from_bytes(seed[:8], "big")
