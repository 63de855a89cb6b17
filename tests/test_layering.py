"""The saga core stays pure: no Kafka, Redis, Avro, asyncio, clock or unseeded randomness."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "orchestrator" / "core").glob("*.py"))
FORBIDDEN = {"aiokafka", "confluent_kafka", "redis", "fastavro", "asyncio", "time", "random"}
#: clock and entropy sources besides time/random, and I/O a pure function has no use for
ALSO_FORBIDDEN = {"datetime", "os", "uuid", "secrets", "threading", "socket", "subprocess"}
#: the one exception: definition.py seeds a private random.Random for the retry jitter
RANDOM_ALLOWED = {"definition.py"}


def imports(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (anywhere in it), as (dotted name, line)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside the core package by construction
                out.append((f"orchestrator.core.{node.module or ''}", node.lineno))
            else:
                out.append((node.module or "", node.lineno))
    return out


def test_core_files_are_found() -> None:
    """The layering checks really look at the core modules."""
    assert {p.name for p in CORE} >= {"decide.py", "definition.py", "model.py"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_no_io_clock_or_randomness(path: Path) -> None:
    """A core module imports none of Kafka, Redis, Avro, asyncio, time or random."""
    banned = (FORBIDDEN | ALSO_FORBIDDEN) - ({"random"} if path.name in RANDOM_ALLOWED else set())
    bad = [(m, line) for m, line in imports(path) if m.split(".")[0] in banned]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_nothing_outside_the_core(path: Path) -> None:
    """The core depends on no adapter of this project (store, daemon, codecs, schemas)."""
    ours = {"orchestrator", "participants", "schemas"}
    bad = [
        (m, line)
        for m, line in imports(path)
        if m.split(".")[0] in ours and not m.startswith("orchestrator.core")
    ]
    assert not bad, f"{path.name} imports {bad}"


def test_random_is_only_used_as_a_seeded_generator_inside_functions() -> None:
    """definition.py calls random.Random(seed) in a function body and nothing else of random."""
    tree = ast.parse((ROOT / "orchestrator" / "core" / "definition.py").read_text())
    assert not [
        n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "random"
    ], "from random import ... hides unseeded calls"
    in_functions = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
    }
    uses = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "random"
    ]
    assert uses, "expected the seeded jitter"
    calls = {
        id(n.func): n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    for use in uses:
        assert use.attr == "Random", f"line {use.lineno}: random.{use.attr} is unseeded or global"
        call = calls.get(id(use))
        assert call is not None and len(call.args) == 1, f"line {use.lineno}: Random() needs a seed"
        assert id(use) in in_functions, f"line {use.lineno}: random used at module level"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_never_reads_a_clock(path: Path) -> None:
    """No clock function is called in the core (time(), now(), ...); time arrives as `now_ms`."""
    clocks = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "now", "utcnow"}
    called = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in clocks:
                called.append((name, n.lineno))
    assert not called, f"{path.name} calls {called}"


def test_importing_the_core_loads_no_adapter_library() -> None:
    """In a fresh interpreter, importing the core pulls in no Kafka, Redis, Avro or asyncio."""
    code = (
        "import sys, orchestrator.core.decide, orchestrator.core.model, "
        "orchestrator.core.definition\n"
        "heavy = {'aiokafka', 'confluent_kafka', 'redis', 'fastavro', 'asyncio', 'orjson'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


# ---- the packages around the core ----------------------------------------------------------

PACKAGES = ("orchestrator", "participants", "schemas", "infra")
#: (folder, prefixes its modules may not import): each layer only looks down
LAYERS = [
    ("infra", ("orchestrator", "participants")),
    ("orchestrator/telemetry", ("orchestrator.engine", "orchestrator.ops", "participants")),
    ("orchestrator/engine", ("orchestrator.ops", "orchestrator.runner", "participants")),
]
#: the CLI (ops/cli.py) is the process edge: it may start the runner, nothing else in ops may


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def our_imports(path: Path) -> set[str]:
    """Every module of ours a file imports, anywhere in it (relative imports resolved).
    `from pkg import sub` depends on the module pkg.sub when there is one, else on pkg."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], base]).strip(".")
            subs = [f"{base}.{a.name}" for a in node.names]
            names = [m for m in subs if _is_module(m)] or [base]
            if len(names) < len(subs):
                names.append(base)
        out |= {n for n in names if n.split(".")[0] in PACKAGES}
    return out


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    return {
        name: {m for m in our_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with one path that shows it."""
    found = []
    for start in sorted(g):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(g.get(node, ())):
                if nxt == start:
                    found.append([*path, start])
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_no_import_cycles() -> None:
    """No module of ours imports itself back through others (function-level imports count)."""
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check is not vacuous: a two-module loop is reported."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b", "a"], ["b", "a", "b"]]


OPS_BELOW_RUNNER = ("orchestrator/ops", ("orchestrator.runner",))


@pytest.mark.parametrize(
    ("folder", "banned"), [*LAYERS, OPS_BELOW_RUNNER], ids=[f for f, _ in LAYERS] + ["ops"]
)
def test_layers_only_look_down(folder: str, banned: tuple[str, ...]) -> None:
    """infra < telemetry < engine < ops < runner < CLI: no module imports a layer above it."""
    files = [
        p for p in sorted((ROOT / folder).rglob("*.py")) if p != ROOT / "orchestrator/ops/cli.py"
    ]
    assert files, f"no modules under {folder}"
    bad = {module_name(p): sorted(m for m in our_imports(p) if m.startswith(banned)) for p in files}
    assert {k: v for k, v in bad.items() if v} == {}
