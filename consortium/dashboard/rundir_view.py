"""A read-only view of a run directory: the files a run writes, read tolerantly, never written.

A run writes `report.json` atomically after every finished round (temp file + rename), so whatever
the report holds is final; `chain/txlog.jsonl` is appended one flushed line a transaction, so its
last line may be half written (it is ignored until complete) and the transactions past the last
finished round show the phase the round in progress has reached; `run.log` gives wall-clock times.
Every problem becomes one line in `problems`, never an exception: the page shows what is readable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .removal_view import record_problem

REPORT = "report.json"
CONFIG = "config.toml"
LOG = "run.log"
TXLOG = "chain/txlog.jsonl"  # = consortium.rundir.TXLOG (not imported: it pulls in torch)
HEAD = "chain/head.json"  # = consortium.rundir.HEAD
AUDIT = "audit.json"  # an audit verdict, if one was saved beside the run (`consortium audit` prints it)
REMOVAL = "removal.json"  # = consortium.removal.remove.RECORD: written by `consortium remove`
WATCHED = (REPORT, LOG, TXLOG, HEAD, AUDIT, CONFIG, REMOVAL)

# contract function -> the phase of a round it belongs to, in the order a round goes through them
PHASES = {
    "open_round": "open",
    "commit_seed": "seed",
    "reveal_seed": "seed",
    "draw": "draw",
    "commit": "commits",
    "post_candidate": "candidates",
    "commit_vote": "votes",
    "reveal_vote": "votes",
    "finalize": "outcome",
}
_LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d) (.*)$")
_ROUND_DONE = re.compile(r"^round (\d+)\b")


class RunDirMissing(ValueError):
    """The path given is not a directory: the dashboard cannot start."""


def check_run_dir(path: Path) -> Path:
    """The run directory, resolved; RunDirMissing naming the path when it is not a directory."""
    if not path.exists():
        raise RunDirMissing(f"{path}: no such run directory")
    if not path.is_dir():
        raise RunDirMissing(f"{path}: not a directory")
    return path.resolve()


def fingerprint(root: Path) -> str:
    """Changes whenever a watched file does (size or mtime): the page's cue to re-render."""
    parts = []
    for name in WATCHED:
        try:
            st = (root / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class Sources:
    """The raw records of a run directory as far as they are readable, with every problem found."""

    report: dict[str, Any] | None = None
    log: list[dict[str, str]] = field(default_factory=list)
    txlog: list[dict[str, Any]] = field(default_factory=list)
    head: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    removal: dict[str, Any] | None = None  # removal.json of a `consortium remove` directory
    problems: list[str] = field(default_factory=list)
    last_change: float | None = None  # newest mtime of a watched file (epoch seconds)


def read_sources(root: Path) -> Sources:
    """Read every record of `root` (never writes; a missing optional file is no problem)."""
    src = Sources()
    if not root.is_dir():
        src.problems.append(f"{root}: the run directory is gone")
        return src
    removal_dir = (root / REMOVAL).exists()  # a removal directory has no report: its record is the run
    if removal_dir:
        src.removal = _read_json(root, REMOVAL, src.problems)
        why = None if src.removal is None else record_problem(src.removal)
        if why:
            src.problems.append(f"{REMOVAL}: {why}")
            src.removal = None
    report = None if removal_dir else _read_json(root, REPORT, src.problems, required=True)
    if report is not None:
        why = _report_problem(report)
        if why:
            src.problems.append(f"{REPORT}: {why}")
            report = None
    src.report = report
    src.head = _read_json(root, HEAD, src.problems)
    src.audit = _read_json(root, AUDIT, src.problems)
    src.log = _read_log(root / LOG, src.problems)
    src.txlog = read_txlog_lines(root / TXLOG, src.problems)
    mtimes = []
    for name in WATCHED:
        with contextlib.suppress(OSError):
            mtimes.append((root / name).stat().st_mtime)
    src.last_change = max(mtimes, default=None)
    return src


def _read_json(root: Path, name: str, problems: list[str], required: bool = False) -> Any:
    path = root / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            problems.append(f"{name}: not written yet (is this a run directory? a run writes it first)")
        return None
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{name}: unreadable ({type(e).__name__}: {e})")
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(f"{name}: not JSON (line {e.lineno}: {e.msg})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{name}: not a JSON object")
        return None
    return data


def _report_problem(r: dict[str, Any]) -> str | None:
    """Why a report cannot be shown (None: it can). Only the fields every view relies on are checked."""
    if not isinstance(r.get("rounds_detail"), list):
        return "no 'rounds_detail' list (not a consortium report)"
    if not all(isinstance(d, dict) for d in r["rounds_detail"]):
        return "'rounds_detail' holds something that is not an object"
    for key in ("rounds", "rounds_completed"):
        if not isinstance(r.get(key), int):
            return f"'{key}' is missing or not an integer"
    return None


def _read_log(path: Path, problems: list[str]) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        problems.append(f"{LOG}: unreadable ({e})")
        return []
    out = []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        out.append({"time": m.group(1), "text": m.group(2)} if m else {"time": "", "text": line})
    return out


def read_txlog_lines(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The complete lines of a transaction log; a last line without its newline is still being
    written and is left out; a malformed complete line is one problem and is skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        problems.append(f"{TXLOG}: unreadable ({e})")
        return []
    lines = raw.split(b"\n")[:-1]  # the part after the last newline is not final yet
    out: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        try:
            e = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append(f"{TXLOG}: line {n} is not JSON; skipped")
            continue
        if not isinstance(e, dict) or e.get("kind") not in ("tx", "mine", "revert"):
            problems.append(f"{TXLOG}: line {n} is not a log entry; skipped")
            continue
        out.append(e | {"line": n})
    return out


def group_rounds(txlog: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """The transaction log cut into the contract's rounds (each starts with a successful `open_round`;
    what comes before is set-up): per phase, its blocks, transaction count, reverts and senders."""
    groups: list[dict[str, Any]] = []
    current: dict[str, Any] = {"round": 0, "phases": {}}
    for e in txlog:
        if e["kind"] != "tx":
            continue
        fn = str(e.get("function", ""))
        if fn == "open_round" and e.get("status") == 1:
            groups.append(current)
            current = {"round": len(groups), "phases": {}}
        phase = PHASES.get(fn, "set-up" if current["round"] == 0 else fn)
        p = current["phases"].setdefault(
            phase,
            {
                "first_block": e.get("block"),
                "last_block": e.get("block"),
                "txs": 0,
                "reverted": 0,
                "from": [],
            },
        )
        p["last_block"] = e.get("block")
        p["txs"] += 1
        p["reverted"] += int(e.get("status") != 1)
        who = names.get(str(e.get("from", "")).lower(), _short(str(e.get("from", ""))))
        if who not in p["from"]:
            p["from"].append(who)
    groups.append(current)
    return groups[1:]  # rounds 1.. (the set-up group dropped)


def _short(address: str) -> str:
    return address[:6] + "…" + address[-4:] if len(address) > 12 else address


def round_finish_times(log: list[dict[str, str]]) -> dict[int, dict[str, Any]]:
    """Round number (1-based) -> wall-clock time it finished and its duration (from the previous
    log line's time), as `run.log` records them."""
    out: dict[int, dict[str, Any]] = {}
    prev: str | None = None
    for entry in log:
        t = entry["time"]
        m = _ROUND_DONE.match(entry["text"])
        if m and t:
            out[int(m.group(1))] = {"finished_at": t, "seconds": _seconds_between(prev, t)}
        if t:
            prev = t
    return out


def _seconds_between(a: str | None, b: str) -> int | None:
    if a is None:
        return None

    def secs(s: str) -> int:
        h, m, x = (int(v) for v in s.split(":"))
        return h * 3600 + m * 60 + x

    return (secs(b) - secs(a)) % 86_400


def age_seconds(src: Sources) -> float | None:
    """Seconds since a watched file last changed (a 'running' run that is silent for long may be dead)."""
    return None if src.last_change is None else max(0.0, time.time() - src.last_change)


def safe_child(root: Path, rel: str) -> Path | None:
    """`root/rel` when it is a regular, final file inside `root` (symlinks resolved; no '..', no
    absolute path, no dot-file such as a temp file of an atomic write); None otherwise."""
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    try:
        path = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path
