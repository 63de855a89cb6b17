"""Avro in the Confluent wire format, with or without a Schema Registry.

Every record is framed the Confluent way: magic byte 0, a 4-byte big-endian schema id, then the
Avro binary body (no container header). Where the id comes from:

* **Registry mode** (`Settings.schema_registry_url` set): `prepare(settings)` registers (or looks
  up) the current schema of every message under its record-name subject (`saga.messages.StartOrder`,
  see `schemas.registry`) and prefetches every version the registry holds for those subjects. The
  ids are cached in a `SchemaTable`; encode and decode never call the registry afterwards.
* **Registry-less mode**: the same framing with *local ids* derived from the schema files:
  `0x40000000 | (CRC-64-AVRO fingerprint of the Parsing Canonical Form >> 34)`. They are stable
  (same schema text, same id, on every machine), differ for every version kept under
  `schemas/avro/history/`, and sit far above the small sequential ids a registry hands out, so a
  registry-mode consumer reads locally framed records too.

Decoding maps the id to the writer schema and reads with fastavro's schema resolution into the
*current* schema (so data written with an older version arrives in today's shape, with defaults
filled in), as a dict in the models' camelCase wire shape; `schemas.codec.to_model` validates it.

After `prepare()` (or without it, in registry-less mode) both directions are pure CPU: safe to
call from the asyncio loop. A record whose schema id is unknown raises `UnknownSchemaError` (a
`DecodeError`); in registry mode the daemon may call `fetch_schema(id)` in a thread and retry once
before dead-lettering.

The module also holds the contract checks behind `saga schemas check`: schema files vs models
(drift) and backward-transitive compatibility with the history.
"""

from __future__ import annotations

import io
import json
import logging
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, get_args, get_origin

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from schemas.codec import DEFAULT_MAX_BYTES, DecodeError
from schemas.messages import MESSAGE_TYPES, Envelope

if TYPE_CHECKING:
    from schemas.config import Settings

log = logging.getLogger(__name__)

SCHEMA_DIR: Final = Path(__file__).with_name("avro")
HISTORY_DIR_NAME: Final = "history"
NAMESPACE: Final = "saga.messages"
MAGIC: Final = 0
HEADER_SIZE: Final = 5
LOCAL_ID_BASE: Final = 0x4000_0000
#: Field attribute marking a string field that carries a JSON object (a free-form `data` dict).
JSON_FIELD_MARK: Final = "x-json"

_HISTORY_FILE = re.compile(
    r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]{0,3})\.avsc$"
)
_CAMEL = re.compile(r"^[a-z][A-Za-z0-9]*$")
_ANY_DICT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])

Parsed = dict[str, Any]


class UnknownSchemaError(DecodeError):
    """The record names a schema id this process does not know (yet)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__("unknown_schema", f"no writer schema known for schema id {schema_id}")
        self.schema_id = schema_id


class SchemaFileError(ValueError):
    """One or more schema files cannot be used; `problems` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------------------------
# Schema files
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Encoding and decoding
# --------------------------------------------------------------------------------------------


def _json_fields(raw: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f["name"] for f in raw["fields"] if f.get(JSON_FIELD_MARK) is True)


def _decimal_fields(raw: dict[str, Any]) -> tuple[tuple[str, Decimal], ...]:
    out = []
    for f in raw["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("logicalType") == "decimal":
            out.append((f["name"], Decimal(1).scaleb(-int(t.get("scale", 0)))))
    return tuple(out)


@dataclass(frozen=True)
class _Writer:
    schema_id: int
    header: bytes
    schema: Parsed
    json_fields: tuple[str, ...]
    decimal_fields: tuple[tuple[str, Decimal], ...]


@dataclass(frozen=True)
class _Reader:
    message_type: str
    writer: Parsed
    reader: Parsed | None  # None: the writer is the current schema, no resolution needed
    json_fields: tuple[str, ...]


def header(schema_id: int) -> bytes:
    """The 5-byte Confluent frame header for a schema id."""
    return bytes([MAGIC]) + schema_id.to_bytes(4, "big")


@dataclass
class SchemaTable:
    """Schema ids <-> schemas for one process. Built once; afterwards pure CPU.

    `writers` maps a message type to the id its current schema is written under; `readers` maps
    every known id (current and older versions, local and registry) to its writer schema.
    """

    schema_set: SchemaSet
    mode: Literal["local", "registry"] = "local"
    max_bytes: int = DEFAULT_MAX_BYTES
    writers: dict[str, _Writer] = field(default_factory=dict)
    readers: dict[int, _Reader] = field(default_factory=dict)
    #: Blocking look-up of an unknown id (registry mode); returns the schema text or None.
    fetcher: Callable[[int], str | None] | None = None

    @classmethod
    def local(
        cls, schema_set: SchemaSet | None = None, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> SchemaTable:
        """Registry-less: every schema file (current and history) under its local id."""
        table = cls(schema_set or default_schema_set(), "local", max_bytes)
        table.add_local_ids()
        for name, sf in table.schema_set.current.items():
            table.set_writer(name, sf.local_id)
        return table

    def add_local_ids(self) -> None:
        """Make every schema file readable under its local id (ids already taken are kept)."""
        for sf in self.schema_set.all_files():
            if sf.local_id not in self.readers:
                self.add_reader(sf.local_id, sf.parsed)

    def set_writer(self, message_type: str, schema_id: int) -> None:
        sf = self.schema_set.current[message_type]
        self.writers[message_type] = _Writer(
            schema_id, header(schema_id), sf.parsed, _json_fields(sf.raw), _decimal_fields(sf.raw)
        )
        self.add_reader(schema_id, sf.parsed)

    def add_reader(self, schema_id: int, writer: Parsed) -> bool:
        """Know `schema_id` as `writer`. False when it is not the record of a message type."""
        name = str(writer.get("name", ""))
        short = name.rpartition(".")[2]
        current = self.schema_set.current.get(short)
        if name != f"{NAMESPACE}.{short}" or current is None or short not in MESSAGE_TYPES:
            return False
        same = to_parsing_canonical_form(writer) == current.canonical
        self.readers[schema_id] = _Reader(
            short, writer, None if same else current.parsed, _json_fields(current.raw)
        )
        return True

    def fetch(self, schema_id: int) -> bool:
        """Registry mode: look an unknown id up (blocking: run it in a thread). True if known."""
        if schema_id in self.readers:
            return True
        if self.fetcher is None:
            return False
        text = self.fetcher(schema_id)
        if text is None:
            return False
        try:
            _, parsed = parse_text(text, f"schema id {schema_id}")
        except SchemaFileError as exc:
            log.warning("registry schema %d unusable: %s", schema_id, exc)
            return False
        return self.add_reader(schema_id, parsed)

    # -- the hot path ------------------------------------------------------------------------

    def record(self, message: Envelope) -> tuple[_Writer, dict[str, Any]]:
        """The message as the dict its current Avro schema describes, and that schema's writer."""
        doc = message.model_dump(by_alias=True)
        message_type = doc.get("messageType")
        w = self.writers.get(message_type) if isinstance(message_type, str) else None
        if w is None:
            raise ValueError(f"no Avro schema for message type {message_type!r}")
        for name in w.json_fields:
            doc[name] = _ANY_DICT.dump_json(doc[name]).decode()
        for name, quantum in w.decimal_fields:
            doc[name] = doc[name].quantize(quantum)
        return w, doc

    def encode(self, message: Envelope) -> bytes:
        w, doc = self.record(message)
        buf = io.BytesIO()
        buf.write(w.header)
        schemaless_writer(buf, w.schema, doc)
        return buf.getvalue()

    def decode(self, value: bytes, max_bytes: int | None = None) -> dict[str, Any]:
        cap = self.max_bytes if max_bytes is None else max_bytes
        if len(value) > cap:
            raise DecodeError("too_large", f"value of {len(value)} bytes exceeds the cap of {cap}")
        if len(value) < HEADER_SIZE + 1 or value[0] != MAGIC:
            raise DecodeError(
                "invalid_avro", "not a Confluent frame (magic byte 0, 4-byte id, body)"
            )
        schema_id = int.from_bytes(value[1:HEADER_SIZE], "big")
        r = self.readers.get(schema_id)
        if r is None:
            raise UnknownSchemaError(schema_id)
        # BytesIO never hands out more than it holds: a length prefix claiming 2**62 bytes, or a
        # negative one, makes fastavro read at most the (capped) rest of the value and raise.
        buf = io.BytesIO(value)
        buf.seek(HEADER_SIZE)
        try:
            doc = schemaless_reader(buf, r.writer, r.reader)
        except SchemaResolutionError as exc:
            raise DecodeError(
                "incompatible_schema", f"schema id {schema_id}: {exc}"[:300]
            ) from None
        except Exception as exc:  # malformed bodies raise EOFError, ValueError, IndexError, ...
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DecodeError("invalid_avro", f"schema id {schema_id}: {reason}"[:300]) from None
        if buf.tell() != len(value):
            raise DecodeError(
                "invalid_avro", f"{len(value) - buf.tell()} bytes after the Avro body"
            )
        if not isinstance(doc, dict):  # pragma: no cover - a record schema always gives a dict
            raise DecodeError("invalid_avro", "the body is not a record")
        if doc.get("messageType") != r.message_type:
            carried = str(doc.get("messageType"))[:64]
            raise DecodeError("invalid", f"a {r.message_type} record says messageType {carried!r}")
        for name in r.json_fields:
            doc[name] = _json_object(doc.get(name), name)
        return doc

    def ids(self) -> dict[str, int]:
        """The id each message type is written under."""
        return {name: w.schema_id for name, w in self.writers.items()}


def _json_object(text: Any, name: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise DecodeError("invalid", f"{name} must be a JSON object in a string")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid", f"{name} is not valid JSON: {exc}"[:300]) from None
    if not isinstance(value, dict):
        raise DecodeError("invalid", f"{name} must hold a JSON object")
    return value


_active: SchemaTable | None = None


def active() -> SchemaTable:
    """The table encode_wire/decode_wire use: the last `prepare()`d one, else registry-less."""
    global _active
    if _active is None:
        _active = SchemaTable.local()
    return _active


def use(table: SchemaTable) -> SchemaTable:
    """Install a table (tests, or a caller that built one itself)."""
    global _active
    _active = table
    return table


def prepare(settings: Settings | None = None, *, auto_register: bool = True) -> SchemaTable:
    """Build and install the schema table at start-up. Blocking: call it before the event loop
    starts, or in a thread. With a registry URL it registers (auto_register) or looks up each
    current schema and prefetches every version of each subject; raises
    `schemas.registry.RegistryError` with a one-line reason when the registry cannot be used.
    """
    if settings is None or not settings.schema_registry_url:
        max_bytes = settings.max_message_bytes if settings is not None else DEFAULT_MAX_BYTES
        return use(SchemaTable.local(max_bytes=max_bytes))
    from schemas import registry

    client = registry.make_client(
        settings.schema_registry_url, timeout_s=settings.connect_timeout_s
    )
    table = registry.registry_table(
        client, auto_register=auto_register, max_bytes=settings.max_message_bytes
    )
    return use(table)


def encode_wire(message: Envelope) -> bytes:
    """Confluent-framed Avro for one message (see `prepare`)."""
    return active().encode(message)


def decode_wire(value: bytes, max_bytes: int | None = None) -> dict[str, Any]:
    """Confluent-framed Avro -> the message as a dict in its camelCase wire shape."""
    return active().decode(value, max_bytes)


def to_record(message: Envelope, ctx: object = None) -> dict[str, Any]:
    """The message as an Avro record dict (free-form dicts as JSON strings, amounts quantized).
    Usable as `to_dict` of confluent-kafka's AvroSerializer (`ctx` is ignored)."""
    return active().record(message)[1]


def from_record(doc: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `to_record` for a dict another Avro reader produced (e.g. confluent-kafka's
    AvroDeserializer): parses the JSON-string fields; then `codec.to_model` validates it."""
    message_type = doc.get("messageType")
    current = (
        active().schema_set.current.get(message_type) if isinstance(message_type, str) else None
    )
    if current is None:
        raise DecodeError("unknown_type", f"unknown message type {str(message_type)[:64]!r}")
    out = dict(doc)
    for name in _json_fields(current.raw):
        out[name] = _json_object(out.get(name), name)
    return out


def fetch_schema(schema_id: int) -> bool:
    """Look up an id the table does not know (registry mode; blocking, run it in a thread)."""
    return active().fetch(schema_id)


# --------------------------------------------------------------------------------------------
# Contract checks: files vs models, and backward-transitive compatibility
# --------------------------------------------------------------------------------------------


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
