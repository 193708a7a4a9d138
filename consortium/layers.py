"""The package's import graph, read from the source (no import runs), and the layer rules it must keep.

`docs/architecture.md` draws its diagram from `module_graph` (`python -m consortium.layers --write`),
and tests/test_layers.py fails on an import cycle or a broken layer rule, so the picture cannot drift
from the code.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = "consortium"


@dataclass(frozen=True)
class Import:
    """One `import` statement of a consortium module: what it names and where it sits."""

    source: str  # importing module, dotted
    target: str  # imported consortium module, dotted (resolved to a module, not a name)
    line: int
    top_level: bool  # False: inside a function (lazy)
    type_only: bool  # inside `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest consortium module that `name` (a module or a module.attribute) refers to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every consortium import of one module, marked top-level / lazy / type-only."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, top: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False, typing_only)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_one(sub, top, True)
                for sub in child.orelse:
                    visit_one(sub, top, typing_only)
            else:
                visit_one(child, top, typing_only)

    def visit_one(child: ast.AST, top: bool, typing_only: bool) -> None:
        names: list[str] = []
        if isinstance(child, ast.Import):
            names = [a.name for a in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (child.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in child.names] or [base]
        else:
            visit(child, top, typing_only)
            return
        for name in names:
            if name.split(".")[0] != PACKAGE:
                continue
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.append(Import(module, target, child.lineno, top, typing_only))

    visit(tree, True, False)
    return found


def module_graph(runtime_only: bool = True, top_level_only: bool = True) -> dict[str, set[str]]:
    """module -> consortium modules it imports (by default: at import time, TYPE_CHECKING left out).
    A package's `__init__` is imported with any of its submodules, so `a.b` also depends on `a`."""
    modules = all_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        for imp in imports_of(m, path, modules):
            if (runtime_only and imp.type_only) or (top_level_only and not imp.top_level):
                continue
            graph[m].add(imp.target)
            parent = imp.target.rpartition(".")[0]
            while parent and parent != m and not m.startswith(parent + "."):
                graph[m].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def package_of(module: str) -> str:
    """The unit the layer rules speak of: `consortium.round.history` -> `round`, `consortium.sim` -> `sim`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "consortium"


def package_graph(graph: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    graph = module_graph(runtime_only=True, top_level_only=False) if graph is None else graph
    out: dict[str, set[str]] = {}
    for m, targets in graph.items():
        src = package_of(m)
        out.setdefault(src, set())
        out[src] |= {package_of(t) for t in targets if package_of(t) not in (src, "consortium")}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def lazy_imports() -> list[Import]:
    """Function-level consortium imports (each must say why it is lazy: `function_level_imports`)."""
    modules = all_modules()
    return [i for m, p in modules.items() for i in imports_of(m, p, modules) if not i.top_level]


@dataclass(frozen=True)
class LazyImport:
    """An import statement inside a function (ours or a library's) and the reason comment it carries."""

    line: int
    text: str  # the statement's first line, stripped
    reason: str | None  # the comment that says why it is not at module top; None: none given


def _comment(line: str) -> str | None:
    """The comment of one source line (`#` outside a string), without the `#`; None if it has none."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return tok.string.lstrip("#").strip() or None
    except (tokenize.TokenError, IndentationError):
        return None
    return None


def function_level_imports(source: str) -> list[LazyImport]:
    """Every import inside a function of `source`, with its reason: the comment on its own line, or the
    comment line right above its group (consecutive import statements), which speaks for the group."""
    lines = source.splitlines()
    found: list[LazyImport] = []

    def reason_of(stmt: ast.stmt, group: list[ast.stmt]) -> str | None:
        for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
            if reason := _comment(lines[n - 1]):
                return reason
        first = group[0].lineno
        above = lines[first - 2].strip() if first >= 2 else ""
        return _comment(above) if above.startswith("#") else None

    def visit(node: ast.AST, in_function: bool) -> None:
        for field_name in ("body", "orelse", "finalbody", "handlers"):
            body = getattr(node, field_name, None)
            if not isinstance(body, list):
                continue
            group: list[ast.stmt] = []
            for stmt in [*body, None]:
                if isinstance(stmt, ast.Import | ast.ImportFrom):
                    group.append(stmt)
                    continue
                if group and in_function:
                    for g in group:
                        found.append(LazyImport(g.lineno, lines[g.lineno - 1].strip(), reason_of(g, group)))
                group = []
                if stmt is not None:
                    visit(stmt, in_function or isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(source), False)
    return sorted(found, key=lambda i: i.line)


def unexplained_imports() -> list[str]:
    """One line per function-level import of the package that gives no reason for being there."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent)
        out += [f"{rel}:{i.line}: {i.text}" for i in function_level_imports(path.read_text()) if not i.reason]
    return out


# The layers, bottom up: a package may import its own layer's and lower layers' packages, as listed in
# ALLOWED (lazy imports included, `TYPE_CHECKING` ones not). `docs/architecture.md` shows this table.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundations": (
        "store", "data", "vector", "batches", "model", "train", "train_fast", "packing", "evaluate", "config",
        "config_sections", "rundir",
        "node_config", "cli_support",
    ),
    "rules": ("defense", "privacy", "aggregate_lora", "attacks", "probe"),
    "round": ("round",),
    "participant": ("local", "backend"),
    "trust layer": ("chain",),
    "drivers": (
        "protocol", "chain_sim", "sim", "sim_participants", "sim_metrics", "sim_report", "node", "audit",
        "deploy", "report", "removal",
    ),
    "command line": ("cli", "cli_probe", "cli_removal", "check", "dashboard"),
}
WHY = {
    "round": "what every driver and the audit compute: no model, no web3",
    "local": "one organisation's side: data split, training, DP share, voter's loss",
    "chain": "the contract and its client: imports nothing of ours",
}
_F = {"store", "data", "vector", "batches", "model", "train", "train_fast", "packing"}
ALLOWED: dict[str, set[str]] = {
    "store": set(),
    "data": set(),
    "vector": set(),  # an adapter as one flat vector <-> named tensors: torch only
    "batches": {"data"},
    "train_fast": set(),
    "packing": {"data"},
    "model": {"data", "batches", "vector"},  # model.warm batches the warm-up corpus
    "train": {"data", "batches", "model", "packing", "train_fast"},
    "evaluate": {"data", "batches", "train"},
    "config_sections": {"model"},  # lora.layers is checked by the model's own rule (a lazy import)
    "config": {"config_sections", "aggregate_lora", "attacks", "defense"},  # validates rules and attacks
    "rundir": {"config"},
    "node_config": set(),
    "cli_support": set(),
    "defense": set(),
    "privacy": {"defense"},  # a rule's registered needs: is it a weighted mean?
    "aggregate_lora": {"defense"},  # which rules have a product form (flora=True)
    "attacks": {"data"},
    # the probe screens updates (defense) and is trained on simulated clients (dataset, samples)
    "probe": {*_F, "attacks", "config", "rundir", "local"},
    "round": {"store", "vector", "defense", "privacy", "aggregate_lora", "probe"},
    "local": {*_F, "evaluate", "privacy"},
    "backend": {*_F},
    "chain": set(),
    "protocol": {"round", "store", "defense"},
    "chain_sim": {"round", "protocol", "store", "chain", "attacks", "config", "rundir", "deploy"},
    "sim": {*_F, "defense", "evaluate", "config", "rundir", "report", "attacks", "privacy", "probe",
            "round", "local", "backend", "protocol", "chain", "chain_sim", "deploy", "sim_participants",
            "sim_metrics", "sim_report"},
    "sim_participants": {"attacks", "config", "data", "local", "chain_sim"},
    "sim_metrics": {"attacks", "config", "data", "evaluate", "model"},
    "sim_report": {"config", "privacy", "protocol", "round", "store", "vector"},
    "node": {*_F, "config", "rundir", "node_config", "probe", "round", "local", "chain"},
    "audit": {"store", "config", "rundir", "round", "chain"},
    "deploy": {"chain", "config"},
    # replays a run's rounds without some participants (sim, protocol) and audits the result (audit);
    # FedRecover's estimate takes its order-fixed dot products from the rules' Gram kernel (defense)
    "removal": {*_F, "config", "rundir", "round", "protocol", "sim", "audit", "backend", "probe", "chain",
                "chain_sim", "report", "defense"},
    "report": {"rundir"},
    "check": {"config", "data", "defense", "privacy", "local", "probe"},
    "dashboard": {"audit", "chain", "store", "cli_support", "removal"},  # a run's page: files or chain
    "cli_probe": {"cli_support", "config", "probe", "rundir"},  # `consortium probe train`
    "cli_removal": {"cli_support", "chain", "node", "node_config"},  # `consortium removal` on a network
    "cli": {*_F, "check", "cli_probe", "cli_removal", "dashboard", "config", "cli_support", "privacy",
            "probe", "backend", "chain", "audit", "deploy", "node", "node_config", "sim", "removal"},
}
IGNORED = {"consortium", "layers", "presets"}


def layer_violations() -> list[str]:
    """One line per package that imports a package it may not (or is in no layer)."""
    out = []
    for pkg, targets in sorted(package_graph().items()):
        if pkg in IGNORED:
            continue
        if pkg not in ALLOWED:
            out.append(f"{pkg}: in no layer (add it to consortium.layers.LAYERS and ALLOWED)")
            continue
        for t in sorted(targets - ALLOWED[pkg] - IGNORED):
            out.append(f"{pkg} imports {t}, which ALLOWED[{pkg!r}] does not list")
    return out


def mermaid() -> str:
    """The package graph as a Mermaid flowchart, one subgraph per layer."""
    graph = package_graph()
    lines = ["flowchart BT"]
    for layer, pkgs in LAYERS.items():
        lines.append(f'  subgraph layer_{layer.replace(" ", "_")}["{layer}"]')
        lines += [f"    {p}" for p in pkgs]
        lines.append("  end")
    for src in sorted(graph):
        for dst in sorted(graph[src] - IGNORED):
            if src not in IGNORED and src != dst:
                lines.append(f"  {src} --> {dst}")
    return "\n".join(lines)


def allowed_table() -> str:
    """What each package may import, as a Markdown table (layer by layer)."""
    rows = ["| layer | package | may import |", "| --- | --- | --- |"]
    for layer, pkgs in LAYERS.items():
        for p in pkgs:
            may = ", ".join(sorted(ALLOWED[p])) or "nothing of ours"
            note = f" ({WHY[p]})" if p in WHY else ""
            rows.append(f"| {layer} | `{p}`{note} | {may} |")
    return "\n".join(rows)


BEGIN, END = "<!-- generated by `python -m consortium.layers --write`: begin -->", "<!-- generated: end -->"


def generated_block() -> str:
    return f"{BEGIN}\n\n```mermaid\n{mermaid()}\n```\n\n{allowed_table()}\n\n{END}"


def write_doc(path: Path) -> bool:
    """Replace the generated block of `path`; True when it changed."""
    text = path.read_text()
    head, sep, rest = text.partition(BEGIN)
    if not sep:
        raise SystemExit(f"{path}: no line {BEGIN!r} to replace from")
    _, sep, tail = rest.partition(END)
    if not sep:
        raise SystemExit(f"{path}: no line {END!r} after the generated block")
    new = head + generated_block() + tail
    path.write_text(new)
    return new != text


def _print(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        doc = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT.parent / "docs" / "architecture.md")
        print(f"{doc}: {'updated' if write_doc(doc) else 'up to date'}")
        raise SystemExit(0)
    g_all = module_graph(top_level_only=False)
    _print(f"import cycle: {' <-> '.join(c)}" for c in cycles(g_all))
    _print(layer_violations())
    _print(f"no reason given for a function-level import: {u}" for u in unexplained_imports())
    every = [
        (path.relative_to(ROOT.parent), i)
        for path in sorted(ROOT.rglob("*.py"))
        for i in function_level_imports(path.read_text())
    ]
    if sys.argv[1:2] == ["--lazy"]:
        _print(f"{rel}:{i.line}: {i.text}  # {i.reason}" for rel, i in every)
    print(f"{len(every)} function-level import statements ({len(lazy_imports())} names of ours)")
