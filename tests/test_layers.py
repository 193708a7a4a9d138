"""The package's layering, read from the source: no import cycle, every package imports only what its
layer may (`consortium.layers.ALLOWED`), `round/` runs without a model or web3, and
docs/architecture.md shows the graph the code has."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from consortium import layers

REPO = Path(__file__).resolve().parents[1]


def test_there_is_no_import_cycle_inside_the_package() -> None:
    """Function-level imports count: a lazy import that closes a loop is a cycle too."""
    assert layers.cycles(layers.module_graph(top_level_only=False)) == []


def test_the_warm_up_batches_without_importing_the_trainer() -> None:
    """The cycle model -> warm -> train -> model is broken at warm: it batches with `batches`."""
    graph = layers.module_graph(top_level_only=False)
    assert "consortium.train" not in graph["consortium.model.warm"]
    assert "consortium.batches" in graph["consortium.model.warm"]


def test_the_cycle_finder_finds_a_lazy_cycle() -> None:
    """A function-level import that closes a loop is a cycle too (what the test above relies on)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert layers.cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph = layers.module_graph(top_level_only=False)
    assert "consortium.backend.ray" in graph["consortium.backend"]  # lazy: Ray is optional
    assert "consortium.chain.client" in graph["consortium.chain.txreplay"]  # relative
    assert "consortium.backend.ray" not in layers.module_graph()["consortium.backend"]


def test_every_package_imports_only_what_its_layer_may() -> None:
    assert layers.layer_violations() == []


def test_a_forbidden_import_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(layers.ALLOWED, "round", {"store"})
    problems = layers.layer_violations()
    assert "round imports defense, which ALLOWED['round'] does not list" in problems


def test_round_needs_no_model_and_no_web3() -> None:
    """What the audit and every driver compute imports neither transformers/peft nor web3."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        BLOCKED = ("transformers", "peft", "web3", "vyper", "eth_abi", "consortium.model",
                   "consortium.chain", "consortium.sim", "consortium.local")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"blocked in this test: {name}")
        sys.meta_path.insert(0, Block())
        import consortium.round.records, consortium.round.pipeline, consortium.round.history
        import consortium.round.chain_view, consortium.round.voting
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_docs_architecture_shows_the_graph_the_code_has() -> None:
    """Regenerate with `python -m consortium.layers --write` after changing an import."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert layers.generated_block() in doc


def _rule_name_tests(source: str) -> list[int]:
    """Lines comparing an `aggregator` with a string (`== "fltrust"`, `in ("fedavg", ...)`)."""
    import ast

    def named_aggregator(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id == "aggregator") or (
            isinstance(node, ast.Attribute) and node.attr == "aggregator"
        )

    def strings(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return True
        return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(strings(e) for e in node.elts)

    return [
        n.lineno
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Compare)
        and any(named_aggregator(x) for x in [n.left, *n.comparators])
        and any(strings(x) for x in [n.left, *n.comparators])
    ]


def test_no_module_outside_defense_tests_a_rule_by_its_name() -> None:
    """What a rule needs (a root update, history, being a weighted mean...) is `defense.needs(name)`."""
    found = {
        str(p.relative_to(REPO)): lines
        for p in sorted((REPO / "consortium").rglob("*.py"))
        if "defense" not in p.parts and (lines := _rule_name_tests(p.read_text()))
    }
    assert found == {}
    assert _rule_name_tests('if cfg.aggregator == "fltrust":\n    pass\n') == [1]
    assert _rule_name_tests('ok = rule.aggregator in ("fedavg", "krum")\n') == [1]


def test_every_function_level_import_says_why_it_is_not_at_the_top() -> None:
    """Only an optional dependency or import time justifies a lazy import, and the line says which."""
    assert layers.unexplained_imports() == []


def test_a_lazy_import_without_a_reason_is_found() -> None:
    source = textwrap.dedent(
        """
        import os

        def f():
            import json
            from pathlib import Path  # import time: stands in for a heavy library
            return json, Path

        def g():
            # web3 is optional: only chain runs need it
            import web3
            from web3 import Web3
            s = "# not a comment"
            import shutil
            return web3, Web3, s, shutil

        class C:
            def h(self):
                if True:
                    import csv
                return csv
        """
    )
    found = {i.text: i.reason for i in layers.function_level_imports(source)}
    assert found == {
        "import json": None,
        "from pathlib import Path  # import time: stands in for a heavy library": (
            "import time: stands in for a heavy library"
        ),
        "import web3": "web3 is optional: only chain runs need it",
        "from web3 import Web3": "web3 is optional: only chain runs need it",
        "import shutil": None,
        "import csv": None,
    }
