"""The checked-in artifact must be what the pinned compiler makes of the checked-in source."""

from __future__ import annotations

import re

from consortium.chain import compile as build
from consortium.chain.artifact import EVM_VERSION, SOURCE, load_artifact


def test_pragmas_pin_compiler_and_evm_version() -> None:
    text = SOURCE.read_text()
    assert re.search(r"^#pragma version 0\.4\.3$", text, re.M)
    assert re.search(rf"^#pragma evm-version {EVM_VERSION}$", text, re.M)
    art = load_artifact()
    assert (art["vyper_version"].split("+")[0], art["evm_version"]) == ("0.4.3", EVM_VERSION)


def test_artifact_matches_a_fresh_compile() -> None:
    assert load_artifact()["source_sha256"] == build.source_sha256(), (
        "Consortium.vy changed: run `python -m consortium.chain.compile`"
    )
    assert build.drift() == [], "artifact.json drifted: run `python -m consortium.chain.compile`"
