"""The schemas modules import each other without a cycle (the codec line in schemas/wire.py)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "schemas"


def schema_imports(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top level or inside functions.

    `from schemas import x` counts as importing `schemas.x` when x is a module, else the package
    itself (its `__init__`); relative imports are resolved against the package."""
    modules = {f"{PACKAGE}.{p.stem}" for p in package_dir.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for path in sorted(package_dir.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = PACKAGE if node.level else ""
                target = ".".join(p for p in (base, node.module or "") if p)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found.add(sub if sub in modules else target)
        graph[name] = {m for m in found if m != name and (m in modules or m == PACKAGE)}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle in the graph, or [] when it has none."""
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        return list(exc.args[1])
    return []


def test_the_schemas_modules_are_found() -> None:
    """The check really reads the codec modules and sees their imports."""
    graph = schema_imports(ROOT / PACKAGE)
    assert {"schemas.codec", "schemas.avro", "schemas.registry", "schemas.wire"} <= graph.keys()
    assert "schemas.wire" in graph["schemas.codec"]


def test_the_schemas_import_graph_is_acyclic() -> None:
    """No module of schemas/ imports, directly or through others, a module that imports it."""
    graph = schema_imports(ROOT / PACKAGE)
    assert cycle(graph) == [], " -> ".join(cycle(graph))


def test_a_function_level_import_that_closes_a_cycle_is_caught(tmp_path: Path) -> None:
    """A lazy `from schemas import avro` inside codec counts: with avro importing codec it is a
    cycle, however it is spelled."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "codec.py").write_text("def encode():\n    from schemas import avro\n")
    (tmp_path / "avro.py").write_text("from schemas.codec import DecodeError\n")
    assert set(cycle(schema_imports(tmp_path))) == {"schemas.codec", "schemas.avro"}
    (tmp_path / "avro.py").write_text("def f():\n    from .codec import DecodeError\n")
    assert set(cycle(schema_imports(tmp_path))) == {"schemas.codec", "schemas.avro"}
    (tmp_path / "avro.py").write_text("import schemas.wire\n")
    assert cycle(schema_imports(tmp_path)) == []
