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
