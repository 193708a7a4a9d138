"""Content-addressed store: names are sha256 of content, tampering is refused, writes are atomic."""

import hashlib
from pathlib import Path

import pytest
import torch

from consortium.store import BlobNotFound, BlobStore, IntegrityError, check_digest


def test_put_get_roundtrip_and_name(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    digest = s.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert s.get(digest) == b"hello" and digest in s
    assert s.put(b"hello") == digest  # idempotent
    assert not [p for p in tmp_path.rglob(".tmp-*")]  # no temp files left behind


def test_flipped_byte_is_refused(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    digest = s.put_tensors({"w": torch.arange(6, dtype=torch.float32)})
    path = tmp_path / digest[:2] / digest
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=f"blob {digest} .* is corrupt"):
        s.get_tensors(digest)


def test_a_corrupt_blob_is_repaired_by_putting_it_again(tmp_path: Path) -> None:
    """A put of the right bytes replaces a corrupt stored copy (it used to be kept: 'already there'),
    and leaves an intact one untouched."""
    s = BlobStore(tmp_path)
    digest = s.put(b"precious bytes")
    path = tmp_path / digest[:2] / digest
    path.write_bytes(b"precious bytez")
    with pytest.raises(IntegrityError):
        s.get(digest)
    assert s.put(b"precious bytes") == digest
    assert s.get(digest) == b"precious bytes"
    before = path.stat().st_mtime_ns
    s.put(b"precious bytes")
    assert path.stat().st_mtime_ns == before  # intact: not rewritten
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_missing_and_malformed_ids(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        s.get("0" * 64)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        s.get("../etc/passwd")
    # a name that a `^...$` pattern accepts: the id plus a trailing newline (a commit URI may carry one)
    digest = s.put(b"hello")
    for bad in (digest + "\n", " " + digest, digest.upper(), digest[:-1]):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            s.get(bad)
        with pytest.raises(ValueError, match="64 lowercase hex"):
            check_digest(bad)


def test_tensor_blobs_are_deterministic(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    t = {"b": torch.ones(3), "a": torch.zeros(2, 2)}
    assert s.put_tensors(t) == s.put_tensors(dict(reversed(list(t.items()))))
    back = s.get_tensors(s.put_tensors(t))
    assert torch.equal(back["a"], t["a"]) and torch.equal(back["b"], t["b"])
