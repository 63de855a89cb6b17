"""The engine does not depend on its samples: no module of `orchestrator`, `participants` (outside
its `samples` folders), `infra` or `schemas` imports anything under a `samples` package, at any
level of the module and including `importlib.import_module("...")` with a literal name."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ("orchestrator", "participants", "infra", "schemas")


def engine_modules(root: Path = ROOT) -> Iterator[Path]:
    """Every .py file of the engine packages, leaving out any `samples` folder."""
    for package in ENGINE:
        for path in sorted((root / package).rglob("*.py")):
            if "samples" not in path.relative_to(root).parts[:-1]:
                yield path


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of what `from ... import` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _dynamic(node: ast.Call) -> str | None:
    """The literal module name of `importlib.import_module("x")` / `import_module("x")` /
    `__import__("x")`."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imported_names(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of everything the module imports, anywhere in it."""
    module = _module_name(path, root)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            yield node.lineno, base
            for alias in node.names:  # `from participants import samples` imports a package
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and (name := _dynamic(node)) is not None:
            yield node.lineno, name


def sample_imports(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line name` for each import of something under a `samples` package."""
    rel = path.relative_to(root)
    return [
        f"{rel}:{line} {name}"
        for line, name in imported_names(path, root)
        if "samples" in name.split(".")
    ]


def test_the_engine_imports_no_sample() -> None:
    """No engine module imports anything under a `samples` package."""
    modules = list(engine_modules())
    assert len(modules) > 50  # the walk found the engine
    found = [hit for path in modules for hit in sample_imports(path)]
    assert found == [], "the engine imports samples:\n" + "\n".join(found)


def test_the_walk_leaves_out_only_samples_folders() -> None:
    """The samples themselves are not checked; the SDK and its CLI are."""
    rel = {str(p.relative_to(ROOT)) for p in engine_modules()}
    assert "participants/cli.py" in rel and "participants/batch.py" in rel
    assert not any("/samples/" in r for r in rel)


def test_the_check_catches_every_form_of_import(tmp_path: Path) -> None:
    """Self-test on a synthetic engine module: a top-level import, a function-level one, a
    relative one, `from participants import samples` and import_module with a literal."""
    package = tmp_path / "participants"
    package.mkdir()
    (package / "__init__.py").write_text("")
    bad = package / "bad.py"
    bad.write_text(
        "import importlib\n"
        "import participants.samples.order\n"
        "from participants import samples\n"
        "from .samples.faults import inject\n"
        "def later():\n"
        "    from participants.samples.order.workers import build_all\n"
        "    return importlib.import_module('participants.samples.order.cli')\n"
    )
    found = sample_imports(bad, tmp_path)
    assert sorted({int(hit.split()[0].rsplit(":", 1)[1]) for hit in found}) == [2, 3, 4, 6, 7]
    assert "participants/bad.py:4 participants.samples.faults" in found
    clean = package / "clean.py"
    clean.write_text("import importlib\nfrom participants import sdk\nimportlib.import_module(x)\n")
    assert sample_imports(clean, tmp_path) == []
