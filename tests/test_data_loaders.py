"""User data loaders: both JSONL record formats, the domain rule, and one exact error per malformed line."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from consortium.data import DataError, Example, load_hf_disk, load_jsonl


def write(tmp_path: Path, lines: list[str], name: str = "shop.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"prompt": "Capital of France?", "response": "Paris"})


def test_prompt_response_format_and_domain_rule(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [GOOD, "", "   ", json.dumps({"prompt": "2+2?", "response": "4", "domain": "math"})],
    )
    assert load_jsonl(path) == [
        Example("Capital of France?", "Paris", "shop"),  # no domain anywhere: the file stem
        Example("2+2?", "4", "math"),  # the record's own domain wins
    ]
    assert [e.domain for e in load_jsonl(path, domain="geo")] == ["geo", "math"]
    assert load_jsonl(str(path))[0].prompt == "Capital of France?"  # str paths work too


def test_chat_format(tmp_path: Path) -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Capital of Peru?"},
            {"role": "assistant", "content": "Lima"},
        ]
    }
    single = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]}
    path = write(tmp_path, [json.dumps(chat), json.dumps(single)])
    assert load_jsonl(path, domain="geo") == [
        Example("Hi\n\nCapital of Peru?", "Lima", "geo"),  # user turns joined; last assistant turn = answer
        Example("Q?", "A", "geo"),
    ]


def test_crlf_and_utf8_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n" + GOOD.encode() + b"\r\n")
    assert len(load_jsonl(path)) == 2


MALFORMED = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    (json.dumps({"prompt": "x"}), "missing key 'response'"),
    (json.dumps({"response": "x"}), "missing key 'prompt'"),
    (json.dumps({"question": "x"}), "missing key 'prompt'/'response' or 'messages'"),
    (json.dumps({"prompt": 3, "response": "x"}), "'prompt' must be a string, got int"),
    (json.dumps({"prompt": "x", "response": None}), "'response' must be a string, got NoneType"),
    (json.dumps({"prompt": "x", "response": "  "}), "empty response"),
    (json.dumps({"prompt": "", "response": "y"}), "empty prompt"),
    (json.dumps({"prompt": "x", "response": "y", "domain": 1}), "'domain' must be a string, got int"),
    (json.dumps({"messages": "hi"}), "'messages' must be a list, got str"),
    (json.dumps({"messages": ["hi"]}), "messages[0] must be an object, got str"),
    (json.dumps({"messages": [{"content": "hi"}]}), "messages[0]: missing key 'role'"),
    (json.dumps({"messages": [{"role": "bot", "content": "hi"}]}), "messages[0]: unknown role 'bot'"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}), "messages[0]: 'content' must be a string"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "no assistant turn"),
    (json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}), "no user turn"),
    (
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}),
        "empty response",
    ),
]


@pytest.mark.parametrize(("line", "what"), MALFORMED)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, what: str) -> None:
    path = write(tmp_path, [GOOD, "", line, GOOD])  # the bad record is on line 3 (blank lines still count)
    with pytest.raises(DataError) as err:
        load_jsonl(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: "), msg
    assert what in msg, msg
    assert "\n" not in msg


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"prompt": "\xff", "response": "x"}\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: not valid UTF-8"):
        load_jsonl(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: file not found$"):
        load_jsonl(path)
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: cannot read"):
        load_jsonl(tmp_path)  # a directory


def test_empty_file_gives_no_examples(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert load_jsonl(path) == []


def test_hf_disk_without_datasets_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError, match="'datasets' package, which is not installed"):
        load_hf_disk(tmp_path)


def test_hf_disk_roundtrip(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"prompt": ["a?", "b?"], "response": ["A", "B"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    assert load_hf_disk(tmp_path / "ds", domain="d") == [Example("a?", "A", "d"), Example("b?", "B", "d")]
    bad = {"prompt": ["a?"], "response": [""]}
    datasets.Dataset.from_dict(bad).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"bad:row 0: empty response"):
        load_hf_disk(tmp_path / "bad")
