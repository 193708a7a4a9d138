"""bench/dashboard_load.py names what it loaded: a run directory or a removal directory; anything else
is refused with exit 2 before a server or browser starts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_dashboard_load", Path(__file__).parents[1] / "bench" / "dashboard_load.py"
)
assert _SPEC is not None and _SPEC.loader is not None
dl = sys.modules.setdefault("bench_dashboard_load", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(dl)


def test_a_run_and_a_removal_directory_are_described_by_their_own_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    report = {"rounds_completed": 3, "rounds": 4, "participants": 5, "status": "stopped"}
    (run / "report.json").write_text(json.dumps(report))
    assert dl.describe(run) == "run directory: run: 3 of 4 rounds, 5 participants, status stopped"
    removal = tmp_path / "removal"
    removal.mkdir()
    record = {
        "removal": {"participants": ["org0", "org7"], "from_round": 2, "method": "recover"},
        "rounds": [{"round": 2}, {"round": 3}],
    }
    (removal / "removal.json").write_text(json.dumps(record))
    assert dl.describe(removal) == (
        "removal directory: removal: org0, org7 removed from round 2 by recover, 2 rounds replayed"
    )


def test_a_folder_that_is_neither_exits_2_naming_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["dashboard_load.py", str(tmp_path)])
    assert dl.main() == 2
    assert "neither report.json" in capsys.readouterr().err
    (tmp_path / "removal.json").write_text(json.dumps({"removal": {}}))  # a damaged record
    assert dl.main() == 2
    assert "'participants'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["removal.json"]
