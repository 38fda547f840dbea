"""The layer order of docs/architecture.md, enforced: a module imports only from layers below its own."""

from __future__ import annotations

import ast
from pathlib import Path

import cybersecqwen

PACKAGE = Path(cybersecqwen.__file__).parent
# Highest first. A unit (a subpackage or a top-level module) may import from its own unit and from lower layers.
LAYERS = [
    {"__main__"},
    {"cli"},
    {"pipeline"},
    {"serve", "scorecard"},  # serve: the HTTP layer only (app, routes, schemas, limits, page)
    {"answering"},  # the CTI jobs, fusion, knowledge-grounded Q&A, advisory analysis, enrichment: no HTTP
    {"export"},  # measures each GGUF file with the evaluator
    {"corpus", "evaluate", "train"},
    {"heads"},  # trained from corpus files, used by the evaluator and the server
    {"config"},  # validates task names against the task registry
    {"tasks", "models"},
    {"catalogs"},
    {"datafiles"},
    {"io", "progress", "machine", "names"},
    {"errors", "__init__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_units(path: Path) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            units |= {unit_of(alias.name) for alias in node.names if alias.name.startswith("cybersecqwen")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cybersecqwen"):
            if node.module == "cybersecqwen":  # `from cybersecqwen import datafiles, __version__`
                units |= {alias.name if alias.name in RANK else "__init__" for alias in node.names}
            else:
                units.add(unit_of(node.module))
    return units


def test_every_module_belongs_to_a_layer():
    units = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to LAYERS here and in docs/architecture.md"


def test_imports_point_down_the_layers():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for imported in imported_units(path):
            if imported != unit and RANK[imported] <= RANK[unit]:
                violations.append(f"{path.relative_to(PACKAGE)} ({unit}) imports {imported}")
    assert not violations, "imports against the layer order (docs/architecture.md):\n" + "\n".join(violations)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from cybersecqwen.corpus.builders import Example\nimport cybersecqwen.serve.app\n")
    assert imported_units(bad) == {"corpus", "serve"}
    assert RANK["corpus"] < RANK["tasks"]  # so tasks importing corpus is reported


def module_imports() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports (function-level imports included)."""
    names = {".".join(("cybersecqwen", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
             for p in PACKAGE.rglob("*.py")}
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("cybersecqwen", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cybersecqwen"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in names}
        graph[name] = {m for m in found if m in names and m != name and not name.startswith(m + ".")}  # a package's own __init__ aside
    return graph


def test_no_import_circles():
    """No module reaches itself through imports (issue 26: advisory -> server -> app -> routes -> advisory was one)."""
    graph = module_imports()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)
