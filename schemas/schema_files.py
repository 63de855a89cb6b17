"""The Avro schema files: `<Name>.avsc` (the current schema of each message type) and
`history/<Name>.v<N>.avsc` (older versions kept readable), loaded and parsed once.

Each file also gives the schema's registry-less *local id*:
`0x40000000 | (CRC-64-AVRO fingerprint of the Parsing Canonical Form >> 34)`. It is stable (same
schema, same id, on every machine), differs for every version kept in history, and sits far above
the small sequential ids a registry hands out (see `schemas.framing`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR: Final = Path(__file__).with_name("avro")
HISTORY_DIR_NAME: Final = "history"
NAMESPACE: Final = "saga.messages"
LOCAL_ID_BASE: Final = 0x4000_0000
#: Field attribute marking a string field that carries a JSON object (a free-form `data` dict).
JSON_FIELD_MARK: Final = "x-json"

_HISTORY_FILE = re.compile(
    r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]{0,3})\.avsc$"
)

Parsed = dict[str, Any]


class SchemaFileError(ValueError):
    """One or more schema files cannot be used; `problems` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SchemaFile:
    """One `.avsc` file: the record schema of one message type at one version."""

    name: str
    version: int
    text: str
    raw: dict[str, Any]
    parsed: Parsed
    path: Path | None = None

    @property
    def full_name(self) -> str:
        return str(self.parsed["name"])

    @cached_property
    def canonical(self) -> str:
        return str(to_parsing_canonical_form(self.parsed))

    @cached_property
    def local_id(self) -> int:
        return local_id(self.parsed)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class SchemaSet:
    """The current schema of every message type, and the older versions kept in history."""

    current: dict[str, SchemaFile]
    history: dict[str, list[SchemaFile]]  # oldest first

    def versions(self, name: str) -> list[SchemaFile]:
        """Every version of one message type, oldest first, the current one last."""
        return [*self.history.get(name, []), self.current[name]]

    def all_files(self) -> Iterator[SchemaFile]:
        for name in self.current:
            yield from self.versions(name)


def local_id(parsed: Parsed) -> int:
    """The registry-less schema id: stable, per canonical form, in [0x40000000, 0x7fffffff]."""
    fp = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
    return LOCAL_ID_BASE | (fp >> 34)


def parse_text(text: str, where: str = "schema") -> tuple[dict[str, Any], Parsed]:
    """Parse one schema document; raise SchemaFileError with a readable reason."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaFileError([f"{where}: not JSON: {exc}"]) from None
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaFileError([f"{where}: the top level must be an Avro record"])
    try:
        parsed = parse_schema(raw)
    except Exception as exc:  # fastavro raises several types for invalid schemas
        raise SchemaFileError([f"{where}: invalid Avro schema: {exc}"]) from None
    if not isinstance(parsed, dict):  # pragma: no cover - a record parses to a dict
        raise SchemaFileError([f"{where}: not a record schema"])
    return raw, parsed


def _load_file(path: Path, name: str, version: int, problems: list[str]) -> SchemaFile | None:
    text = path.read_text(encoding="utf-8")
    try:
        raw, parsed = parse_text(text, str(path))
    except SchemaFileError as exc:
        problems.extend(exc.problems)
        return None
    expected = f"{NAMESPACE}.{name}"
    if parsed["name"] != expected:
        problems.append(f"{path}: record is named {parsed['name']}, the file name says {expected}")
        return None
    return SchemaFile(name, version, text, raw, parsed, path)


def load_schema_set(directory: Path = SCHEMA_DIR) -> SchemaSet:
    """Load `<dir>/<Name>.avsc` and `<dir>/history/<Name>.v<N>.avsc`; collect every problem."""
    problems: list[str] = []
    history_files: dict[str, list[tuple[int, Path]]] = {}
    history_dir = directory / HISTORY_DIR_NAME
    if history_dir.is_dir():
        for path in sorted(history_dir.glob("*.avsc")):
            m = _HISTORY_FILE.match(path.name)
            if m is None:
                problems.append(f"{path}: history files are named <Name>.v<N>.avsc")
                continue
            history_files.setdefault(m["name"], []).append((int(m["version"]), path))
    current: dict[str, SchemaFile] = {}
    history: dict[str, list[SchemaFile]] = {}
    for path in sorted(directory.glob("*.avsc")):
        name = path.stem
        olds = sorted(history_files.pop(name, []))
        numbers = [v for v, _ in olds]
        if numbers != list(range(1, len(olds) + 1)):
            problems.append(
                f"{name}: history versions must be v1..v{len(olds)} without gaps, got {numbers}"
            )
        loaded = [_load_file(p, name, v, problems) for v, p in olds]
        history[name] = [f for f in loaded if f is not None]
        cur = _load_file(path, name, len(olds) + 1, problems)
        if cur is not None:
            current[name] = cur
    for name in history_files:
        problems.append(
            f"history has versions of {name} but {directory}/{name}.avsc does not exist"
        )
    if problems:
        raise SchemaFileError(problems)
    return SchemaSet(current, history)


_DEFAULT_SET: SchemaSet | None = None


def default_schema_set() -> SchemaSet:
    """The schema files shipped with the package (loaded once)."""
    global _DEFAULT_SET
    if _DEFAULT_SET is None:
        _DEFAULT_SET = load_schema_set()
    return _DEFAULT_SET
