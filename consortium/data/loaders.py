"""Load the user's own examples: JSONL files and `datasets` directories saved with `save_to_disk`.

Accepted records (one JSON object per JSONL line; blank lines are skipped):
  * `{"prompt": str, "response": str, "domain"?: str}`
  * `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], "domain"?: str}`
    Chat rule: the response is the LAST assistant turn; the prompt is every user turn before it, joined by
    a blank line. System turns and earlier assistant turns are dropped: Consortium trains single-turn
    prompt -> answer pairs and lets the tokenizer's chat template supply the system message.
Domain: the record's own "domain" if present, else the `domain` argument, else the file's stem.
Any bad record raises DataError "<path>:<line>: <what is wrong>", so the user can go straight to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consortium.data.errors import DataError
from consortium.data.example import Example

ROLES = ("system", "user", "assistant")


def _text(record: Mapping[str, Any], key: str, where: str) -> str:
    if key not in record:
        raise DataError(f"{where}: missing key {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _from_messages(messages: Any, where: str) -> tuple[str, str]:
    if not isinstance(messages, list):
        raise DataError(f"{where}: 'messages' must be a list, got {type(messages).__name__}")
    turns: list[tuple[str, str]] = []
    for k, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: messages[{k}] must be an object, got {type(msg).__name__}")
        role = _text(msg, "role", f"{where}: messages[{k}]")
        if role not in ROLES:
            expected = ", ".join(ROLES)
            raise DataError(f"{where}: messages[{k}]: unknown role {role!r} (expected one of {expected})")
        turns.append((role, _text(msg, "content", f"{where}: messages[{k}]")))
    last = max((k for k, (role, _) in enumerate(turns) if role == "assistant"), default=None)
    if last is None:
        raise DataError(f"{where}: no assistant turn in 'messages'")
    users = [content for role, content in turns[:last] if role == "user"]
    if not users:
        raise DataError(f"{where}: no user turn before the last assistant turn")
    return "\n\n".join(users), turns[last][1]


def parse_record(record: Any, where: str, default_domain: str) -> Example:
    """One record (already JSON-decoded) -> Example; `where` prefixes every error message."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        prompt, response = _from_messages(record["messages"], where)
    elif "prompt" in record or "response" in record:
        prompt, response = _text(record, "prompt", where), _text(record, "response", where)
    else:
        raise DataError(f"{where}: missing key 'prompt'/'response' or 'messages'")
    domain = _text(record, "domain", where) if "domain" in record else default_domain
    if not prompt.strip():
        raise DataError(f"{where}: empty prompt")
    if not response.strip():
        raise DataError(f"{where}: empty response")
    if not domain.strip():
        raise DataError(f"{where}: empty domain")
    return Example(prompt=prompt, response=response, domain=domain)


def load_jsonl(path: str | Path, domain: str | None = None) -> list[Example]:
    """Every record of a JSONL file, in file order. Raises DataError naming the file (and line)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    default_domain = domain if domain is not None else path.stem
    examples: list[Example] = []
    for lineno, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            line = line_bytes.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        examples.append(parse_record(record, where, default_domain))
    return examples


def load_hf_disk(path: str | Path, domain: str | None = None) -> list[Example]:
    """Records of a `datasets` directory saved with `save_to_disk` (same record rules as JSONL).

    A DatasetDict contributes its "train" split, or its only split. `datasets` is optional and imported here.
    """
    try:
        import datasets  # optional dependency, imported only when used
    except ImportError:
        raise DataError(
            f"{path}: loading a datasets directory needs the 'datasets' package, which is not "
            "installed (pip install datasets)"
        ) from None
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: directory not found")
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a datasets directory saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            splits = ", ".join(ds)
            raise DataError(f"{path}: DatasetDict has splits {splits}; expected 'train' or a single split")
    default_domain = domain if domain is not None else path.name
    return [parse_record(row, f"{path}:row {i}", default_domain) for i, row in enumerate(ds)]
