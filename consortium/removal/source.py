"""The original run a removal starts from, read and checked before anything is written.

A removal needs the run's resolved config (the one it trained under, valid for this version of the
config schema), its round records (`report.json`'s `rounds_detail`) and every blob they name from the
first removed round on. Each failure is a `RemovalInputError` with one line naming what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.config import ConfigError, RunConfig
from consortium.round.records import Commitment
from consortium.rundir import load_run_config
from consortium.store import BlobStore

METHODS = ("exact", "recover", "subtract")


class RemovalInputError(ValueError):
    """A removal cannot start: bad run directory, participant, round, method or a missing blob."""


@dataclass(frozen=True)
class RoundRecord:
    """One finished round as the run recorded it: what its candidate is a pure function of."""

    round: int
    seed: int
    global_in: str
    global_out: str
    commitments: tuple[Commitment, ...]
    root: str | None
    evidence: dict[str, str]
    flagged: tuple[str, ...]
    weights: dict[str, float]

    @classmethod
    def of(cls, d: dict[str, Any]) -> RoundRecord:
        return cls(
            round=int(d["round"]),
            seed=int(d["seed"]),
            global_in=str(d["global_in"]),
            global_out=str(d["global_out"] or d["global_in"]),
            commitments=tuple(Commitment(**c) for c in d["commitments"]),
            root=d.get("root"),
            evidence=dict(d.get("evidence") or {}),
            flagged=tuple(d.get("flagged") or ()),
            weights={k: float(v) for k, v in (d.get("weights") or {}).items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "seed": self.seed,
            "global_in": self.global_in,
            "global_out": self.global_out,
            "commitments": [c.__dict__ for c in self.commitments],
            "root": self.root,
            "evidence": self.evidence,
            "flagged": list(self.flagged),
            "weights": self.weights,
        }

    @property
    def proposers(self) -> list[str]:
        return [c.participant for c in self.commitments]

    def blobs(self) -> list[str]:
        """Every blob the round's candidate is computed from, and its result."""
        out = [self.global_in, self.global_out, *(c.blob for c in self.commitments), *self.evidence.values()]
        return out + ([self.root] if self.root else [])


@dataclass(frozen=True)
class SourceRun:
    """The original run: its directory, config, records and which rounds the removal replaces."""

    path: Path
    cfg: RunConfig
    report: dict[str, Any]
    rounds: list[RoundRecord]
    removed: tuple[str, ...]
    from_round: int

    @property
    def store(self) -> BlobStore:
        return BlobStore(self.path / "store")

    @property
    def kept(self) -> list[RoundRecord]:
        """Rounds before the removal starts: they stay as they were."""
        return self.rounds[: self.from_round]

    @property
    def replaced(self) -> list[RoundRecord]:
        """Rounds from the removal's first round on: what each method recomputes."""
        return self.rounds[self.from_round :]

    @property
    def start(self) -> str:
        """The global model the first replaced round started from."""
        return self.rounds[self.from_round].global_in

    @property
    def others(self) -> list[str]:
        names = self.report.get("participant_examples") or {}
        return [n for n in names if n not in self.removed]


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RemovalInputError(f"{path}: missing (not a finished run directory)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RemovalInputError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RemovalInputError(f"{path}: expected a JSON object")
    return data


def _config(path: Path) -> RunConfig:
    try:
        return load_run_config(path)
    except ConfigError as e:
        raise RemovalInputError(f"{e} (a run directory from another config version?)") from None


def read_source(run_dir: Path, participants: Sequence[str], from_round: int | None, method: str) -> SourceRun:
    """The original run, checked for a removal of `participants` from `from_round` (None: the first
    round any of them has a committed update in) by `method`."""
    if method not in METHODS:
        raise RemovalInputError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    if not run_dir.is_dir():
        raise RemovalInputError(f"{run_dir}: not a run directory")
    if (run_dir / "removal.json").is_file():
        raise RemovalInputError(f"{run_dir}: is itself a removal; remove from the original run directory")
    cfg = _config(run_dir / "config.toml")
    report = read_json(run_dir / "report.json")
    if cfg.protocol != "central" and method == "recover":
        raise RemovalInputError(
            f"{run_dir}: protocol {cfg.protocol!r}: --method recover replays central runs only (a chain "
            "has no place for estimated updates the others can check); exact (the contract's removal, "
            "played on the run's chain) and subtract work"
        )
    if report.get("status") != "complete":
        raise RemovalInputError(f"{run_dir}: run status {report.get('status')!r}, expected 'complete'")
    try:
        rounds = [RoundRecord.of(d) for d in report.get("rounds_detail", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise RemovalInputError(f"{run_dir / 'report.json'}: malformed round record: {e!r}") from None
    if not rounds:
        raise RemovalInputError(f"{run_dir / 'report.json'}: no round records")
    known = list(report.get("participant_examples") or {})
    if not participants:
        raise RemovalInputError("--participant: name at least one participant to remove")
    for name in participants:
        if name not in known:
            raise RemovalInputError(
                f"--participant {name!r}: not a participant of this run ({', '.join(known)})"
            )
    if len(set(participants)) == len(known):
        raise RemovalInputError("--participant: removing every participant leaves nobody to train")
    if from_round is None:
        took_part = [r.round for r in rounds if set(r.proposers) & set(participants)]
        if not took_part:
            raise RemovalInputError(
                f"--participant {', '.join(participants)}: no committed update in any round"
            )
        from_round = took_part[0]
    if not 0 <= from_round < len(rounds) or rounds[from_round].round != from_round:
        raise RemovalInputError(
            f"--from-round {from_round}: no record of that round (the run has rounds 0..{len(rounds) - 1})"
        )
    src = SourceRun(run_dir, cfg, report, rounds, tuple(dict.fromkeys(participants)), from_round)
    _check_blobs(src)
    return src


def _check_blobs(src: SourceRun) -> None:
    """Every blob a method reads must be in the store (its hash is checked when it is read)."""
    store = src.store
    needed = [src.start] + [b for r in src.replaced for b in r.blobs()]
    if src.cfg.probe.artifact:  # the pipeline screens by the probe the run published into its store
        needed.append(src.cfg.probe.artifact)
    for r in src.kept:
        needed += r.blobs()
    for digest in dict.fromkeys(needed):
        if digest not in store:
            raise RemovalInputError(f"{src.path / 'store'}: blob {digest} is missing")
