"""The contract checks behind `saga schemas check`: schema files vs message models (drift) and
backward-transitive compatibility of each schema with its history, tried on sample data."""

from __future__ import annotations

import io
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastavro import schemaless_reader, schemaless_writer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from schemas.messages import MESSAGE_TYPES
from schemas.schema_files import (
    JSON_FIELD_MARK,
    SCHEMA_DIR,
    Parsed,
    SchemaFile,
    SchemaFileError,
    load_schema_set,
)

_CAMEL = re.compile(r"^[a-z][A-Za-z0-9]*$")


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _model_shape(tp: Any) -> str:
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return f"optional<{_model_shape(rest[0])}>"
        return "union<" + ",".join(_model_shape(a) for a in args) + ">"
    if origin is Literal:
        values = get_args(tp)
        return "string" if all(isinstance(v, str) for v in values) else f"unsupported:{tp}"
    if origin is list:
        return f"array<{_model_shape(get_args(tp)[0])}>"
    if origin is dict:
        key, value = (_strip(a) for a in get_args(tp))
        if key is not str:
            return f"unsupported:{tp}"
        return "json" if value is Any else f"map<{_model_shape(value)}>"
    if tp is str:
        return "string"
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if tp is float:
        return "double"
    if tp is datetime:
        return "timestamp-millis"
    if tp is Decimal:
        return "decimal"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"record:{tp.__name__}"
    return f"unsupported:{tp}"


_PRIMITIVE_SHAPES = {
    "string": "string",
    "int": "integer",
    "long": "integer",
    "boolean": "boolean",
    "float": "double",
    "double": "double",
    "bytes": "bytes",
    "null": "null",
}


def _avro_shape(t: Any, json_mark: bool = False) -> str:
    if isinstance(t, list):
        rest = [b for b in t if b != "null"]
        if len(rest) == 1 and len(t) == 2:
            return f"optional<{_avro_shape(rest[0], json_mark)}>"
        return "union<" + ",".join(_avro_shape(b) for b in t) + ">"
    if isinstance(t, str):
        if t == "string" and json_mark:
            return "json"
        return _PRIMITIVE_SHAPES.get(t, f"record:{t.rpartition('.')[2]}")
    if not isinstance(t, dict):
        return f"unsupported:{t}"
    logical = t.get("logicalType")
    if logical in ("timestamp-millis", "decimal"):
        return str(logical)
    kind = t.get("type")
    if kind == "record":
        return f"record:{str(t.get('name', '')).rpartition('.')[2]}"
    if kind == "array":
        return f"array<{_avro_shape(t.get('items'))}>"
    if kind == "map":
        return f"map<{_avro_shape(t.get('values'))}>"
    if kind in ("enum", "fixed"):
        return str(kind)
    return _avro_shape(kind, json_mark)


def _nested_records(t: Any) -> Iterator[dict[str, Any]]:
    if isinstance(t, list):
        for b in t:
            yield from _nested_records(b)
    elif isinstance(t, dict):
        if t.get("type") == "record":
            yield t
        for key in ("items", "values"):
            if key in t:
                yield from _nested_records(t[key])


def _nested_models(tp: Any) -> Iterator[type[BaseModel]]:
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in get_args(tp):
        yield from _nested_models(arg)


def _empty_default(shape: str) -> Any:
    return {"json": "{}", "map<string>": {}}.get(shape, [] if shape.startswith("array<") else {})


def record_drift(model: type[BaseModel], record: dict[str, Any], where: str = "") -> list[str]:
    """Differences between a pydantic model and the Avro record (raw JSON) meant to carry it:
    field names (camelCase aliases), optional vs required, types, and defaults."""
    where = where or model.__name__
    problems: list[str] = []
    avro_fields = {f["name"]: f for f in record.get("fields", [])}
    model_fields = {(fi.alias or name): fi for name, fi in model.model_fields.items()}
    for name in avro_fields:
        if not _CAMEL.match(name):
            problems.append(f"{where}.{name}: schema field names are camelCase")
    for name in sorted(model_fields.keys() - avro_fields.keys()):
        problems.append(f"{where}.{name}: in the model, missing from the schema")
    for name in sorted(avro_fields.keys() - model_fields.keys()):
        problems.append(f"{where}.{name}: in the schema, missing from the model")
    for name in [n for n in model_fields if n in avro_fields]:
        fi, af = model_fields[name], avro_fields[name]
        want = _model_shape(fi.annotation)
        have = _avro_shape(af["type"], af.get(JSON_FIELD_MARK) is True)
        if want != have:
            problems.append(f"{where}.{name}: the model says {want}, the schema says {have}")
            continue
        problems.extend(_default_drift(fi, af, want, f"{where}.{name}"))
        models = {m.__name__: m for m in _nested_models(fi.annotation)}
        for nested in _nested_records(af["type"]):
            short = str(nested.get("name", "")).rpartition(".")[2]
            if short in models:
                problems.extend(record_drift(models[short], nested, f"{where}.{name}[{short}]"))
    return problems


def _default_drift(fi: FieldInfo, af: dict[str, Any], shape: str, where: str) -> list[str]:
    has_default = "default" in af
    if fi.default_factory is not None:
        if fi.default_factory in (dict, list):
            expected = _empty_default(shape)
            if has_default and af["default"] != expected:
                return [f"{where}: the schema default should be {expected!r}"]
            return []
        if has_default:
            return [f"{where}: generated per message in the model; the schema must have no default"]
        return []
    if fi.is_required():
        return (
            [f"{where}: required in the model but has a default in the schema"]
            if has_default
            else []
        )
    expected = fi.default
    if not has_default:
        return [f"{where}: the model default {expected!r} is missing from the schema"]
    if af["default"] != expected or type(af["default"]) is not type(expected):
        return [f"{where}: default {af['default']!r} in the schema, {expected!r} in the model"]
    return []


def sample_datum(t: Any, variant: int = 0, named: dict[str, Any] | None = None) -> Any:
    """A deterministic datum for a parsed schema; `variant` picks union branches (i mod n)."""
    named = named if named is not None else {}
    if isinstance(t, list):
        return sample_datum(t[variant % len(t)], variant, named)
    if isinstance(t, str):
        primitives: dict[str, Any] = {
            "null": None, "boolean": True, "int": 1, "long": 1, "float": 1.5, "double": 1.5,
            "bytes": b"x", "string": "x",
        }  # fmt: skip
        if t in primitives:
            return primitives[t]
        return sample_datum(named[t], variant, named)
    logical = t.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return datetime(2024, 1, 1, tzinfo=UTC)
    if logical == "date":
        return date(2024, 1, 1)
    if logical == "decimal":
        return Decimal(1).quantize(Decimal(1).scaleb(-int(t.get("scale", 0))))
    kind = t["type"]
    if kind == "record":
        named.setdefault(t["name"], t)
        return {f["name"]: sample_datum(f["type"], variant, named) for f in t["fields"]}
    if kind == "array":
        return [sample_datum(t["items"], variant, named)]
    if kind == "map":
        return {"k": sample_datum(t["values"], variant, named)}
    if kind == "enum":
        named.setdefault(t["name"], t)
        return t["symbols"][variant % len(t["symbols"])]
    if kind == "fixed":
        named.setdefault(t["name"], t)
        return bytes(int(t["size"]))
    return sample_datum(kind, variant, named)


def _union_width(t: Any) -> int:
    if isinstance(t, list):
        return max([len(t), *(_union_width(b) for b in t)])
    if isinstance(t, dict):
        parts = [t.get("items"), t.get("values"), *(f["type"] for f in t.get("fields", []))]
        return max([1, *(_union_width(p) for p in parts if p is not None)])
    return 1


def read_with(writer: Parsed, reader: Parsed) -> list[str]:
    """Write sample data with `writer`, read it back with `reader` through fastavro's schema
    resolution. Returns the problems (empty when every sample reads)."""
    for variant in range(max(2, _union_width(writer))):
        datum = sample_datum(writer, variant, dict(writer.get("__named_schemas", {})))
        buf = io.BytesIO()
        schemaless_writer(buf, writer, datum)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer, reader)
        except Exception as exc:
            return [f"{type(exc).__name__}: {exc}"]
    return []


def backward_problems(new: Parsed, olders: list[SchemaFile]) -> list[str]:
    """BACKWARD_TRANSITIVE: `new` must read data written with every older version."""
    problems = []
    for old in olders:
        for p in read_with(old.parsed, new):
            problems.append(
                f"{old.label}: data written with it cannot be read with the newer schema: {p}"
            )
    return problems


@dataclass
class ContractReport:
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_contract(directory: Path = SCHEMA_DIR) -> ContractReport:
    """Everything `saga schemas check` verifies, as notes and problems."""
    report = ContractReport()
    try:
        ss = load_schema_set(directory)
    except SchemaFileError as exc:
        report.problems.extend(exc.problems)
        return report
    n_hist = sum(len(v) for v in ss.history.values())
    report.notes.append(
        f"parsed {len(ss.current)} schemas and {n_hist} older version(s) in {directory}"
    )
    for name in sorted(MESSAGE_TYPES.keys() - ss.current.keys()):
        report.problems.append(f"{name}: a message type without a schema file ({name}.avsc)")
    for name in sorted(ss.current.keys() - MESSAGE_TYPES.keys()):
        report.problems.append(f"{name}.avsc: no message model of that name")
    drift = [
        p
        for name, sf in sorted(ss.current.items())
        if name in MESSAGE_TYPES
        for p in record_drift(MESSAGE_TYPES[name], sf.raw)
    ]
    report.problems.extend(drift)
    if not drift:
        report.notes.append("every schema matches its model (names, optionality, types, defaults)")
    compat = [
        p
        for name, sf in sorted(ss.current.items())
        for p in backward_problems(sf.parsed, ss.history[name])
    ]
    report.problems.extend(compat)
    if not compat:
        report.notes.append("every schema reads all its older versions (BACKWARD_TRANSITIVE)")
    seen: dict[int, str] = {}
    for sf in ss.all_files():
        other = seen.setdefault(sf.local_id, sf.label)
        if other != sf.label:
            report.problems.append(
                f"{sf.label} and {other} share local id {sf.local_id:#x} (identical versions?)"
            )
    return report
