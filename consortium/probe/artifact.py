"""Probe artifacts: one safetensors blob (classifier tensors + JSON metadata) named by its sha256.

A run names its probe by that hash, so screening is a pure function of public records: anyone with the
store recomputes the same scores. Reading a probe always checks the hash; a blob whose content does not
hash to its name, or whose metadata is not a probe's, is refused with an error saying which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load

from consortium.probe.features import FeatureSpec
from consortium.probe.model import KINDS, Probe
from consortium.store import (
    BlobNotFound,
    BlobStore,
    IntegrityError,
    is_digest,
    sha256_hex,
    tensors_metadata,
    tensors_to_bytes,
)

FORMAT = "consortium-probe/1"


class ProbeError(ValueError):
    """A probe artifact that cannot be used: missing, tampered with, malformed or for another layout."""


def to_bytes(probe: Probe) -> bytes:
    """Deterministic serialisation: the same probe always gives the same bytes, hence the same hash."""
    meta = {
        "format": FORMAT,
        "kind": probe.kind,
        "features": json.dumps(probe.features.to_json(), sort_keys=True),
        "layout": json.dumps([[n, list(s)] for n, s in probe.layout]),
        "info": json.dumps(probe.info, sort_keys=True),
    }
    # one metadata key: safetensors writes its metadata map in hash order, which differs between calls
    return tensors_to_bytes(probe.tensors, {"probe": json.dumps(meta, sort_keys=True)})


def _metadata(data: bytes) -> dict[str, str]:
    return json.loads(tensors_metadata(data).get("probe", "{}"))


def from_bytes(data: bytes, where: str = "probe") -> Probe:
    """Parse a probe blob (the caller has checked its hash)."""
    try:
        meta = _metadata(data)
        tensors = st_load(data)
    except Exception as e:
        raise ProbeError(f"{where}: not a safetensors probe blob ({e})") from None
    if meta.get("format") != FORMAT:
        raise ProbeError(f"{where}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("kind") not in KINDS:
        raise ProbeError(f"{where}: unknown probe kind {meta.get('kind')!r}")
    layout = [(n, tuple(s)) for n, s in json.loads(meta["layout"])]
    features = FeatureSpec.from_json(json.loads(meta["features"]))
    return Probe(meta["kind"], features, layout, dict(tensors), json.loads(meta.get("info", "{}")))


def save(probe: Probe, out: Path | str) -> tuple[str, Path]:
    """Write `<out>/<sha256>.safetensors` (atomically, via the blob store's rules); returns (hash, path)."""
    data = to_bytes(probe)
    digest = sha256_hex(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{digest}.safetensors"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return digest, path


def load_file(path: Path | str, expected: str | None = None) -> Probe:
    """Read a probe file named `<sha256>.safetensors`; refuses it unless its content hashes to its name
    (and to `expected`, when given)."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path}: probe file not found")
    data = path.read_bytes()
    digest = sha256_hex(data)
    named = path.name.removesuffix(".safetensors")
    want = expected or named
    if not is_digest(want):
        raise ProbeError(f"{path}: a probe is named by its sha256 (64 hex characters), got {want!r}")
    if digest != want:
        raise ProbeError(f"{path}: probe content hashes to {digest}, not {want}: tampered or corrupt")
    return from_bytes(data, str(path))


def publish(probe_file: Path | str, store: BlobStore) -> str:
    """Put a verified probe file into a run's blob store (where the audit finds it); returns its hash."""
    load_file(probe_file)
    return store.put(Path(probe_file).read_bytes())


def load(store: BlobStore, digest: str) -> Probe:
    """The probe named `digest` from a blob store, hash-checked on every read (it is small)."""
    try:
        data = store.get(digest)
    except (BlobNotFound, IntegrityError, ValueError) as e:
        raise ProbeError(f"probe {digest}: {e}") from None
    return from_bytes(data, f"probe {digest}")


# the settings that shape a level's evidence: a probe scores only what it was fitted on
LEVEL_EVIDENCE = {"client": (), "step": ("step_every",), "shadow": ("shadow_lr", "shadow_steps")}


def check_fitted_for(probe: Probe, section: Any, digest: str = "") -> None:
    """ProbeError when a run (its `[probe]` table) would hand the probe other vectors than it was
    fitted on: another level, or other step snapshots or shadow branch than the ones it learned to
    score. An artifact that does not record them (a synthetic or older probe) is not checked."""
    fitted = probe.info.get("level")
    if fitted is not None and fitted != section.level:
        raise ProbeError(f"probe {digest}: fitted at the {fitted} level, but probe.level = {section.level!r}")
    recorded = probe.info.get("evidence", {})
    for key in LEVEL_EVIDENCE.get(section.level, ()):
        if key in recorded and recorded[key] != getattr(section, key):
            raise ProbeError(
                f"probe {digest}: fitted on probe.{key} = {recorded[key]!r}, "
                f"but the run sets {getattr(section, key)!r}"
            )


def check_layout(probe: Probe, lay: list[tuple[str, tuple[int, ...]]], digest: str = "") -> None:
    """ProbeError unless the probe was trained for exactly this adapter layout."""
    mine = [(n, tuple(s)) for n, s in probe.layout]
    theirs = [(n, tuple(s)) for n, s in lay]
    if mine != theirs:
        first = next((f"{a} vs {b}" for a, b in zip(mine, theirs, strict=False) if a != b), "")
        raise ProbeError(
            f"probe {digest[:12]} was trained for another adapter layout ({len(mine)} tensors, "
            f"the run has {len(theirs)}; first difference: {first or 'length'})"
        )
