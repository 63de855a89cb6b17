"""Avro in the Confluent wire format, with or without a Schema Registry.

Every record is framed the Confluent way: magic byte 0, a 4-byte big-endian schema id, then the
Avro binary body (no container header). A `SchemaTable` maps ids to schemas both ways:

* **Registry mode**: `schemas.avro.prepare(settings)` builds the table from the registry (see
  `schemas.registry`); encode and decode never call the registry afterwards (only `fetch` does,
  for an id first seen later).
* **Registry-less mode**: the same framing with the *local ids* of the schema files (see
  `schemas.schema_files`), which a registry-mode consumer reads too.

Decoding maps the id to the writer schema and reads with fastavro's schema resolution into the
*current* schema (so data written with an older version arrives in today's shape, with defaults
filled in), as a dict in the models' camelCase wire shape; `schemas.codec.to_model` validates it.

Once the table is built both directions are pure CPU: safe to call from the asyncio loop. A record
whose schema id is unknown raises `UnknownSchemaError` (a `DecodeError`). In registry mode a
consumer first asks the registry about such ids (`to_fetch` names them, `fetch` looks one up,
blocking: `schemas.avro.fetch_unknown_schemas` runs it in a thread) and then decodes; an id the
registry does not have is remembered for `MISSING_TTL_S`, so poison with a random id costs one
look-up, and its `UnknownSchemaError` says the registry has no such schema.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

import orjson
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form
from pydantic import TypeAdapter

from schemas.messages import MESSAGE_TYPES, Envelope
from schemas.schema_files import (
    JSON_FIELD_MARK,
    NAMESPACE,
    Parsed,
    SchemaFileError,
    SchemaSet,
    default_schema_set,
    parse_text,
)
from schemas.wire import DEFAULT_MAX_BYTES, DecodeError

log = logging.getLogger(__name__)

MAGIC: Final = 0
HEADER_SIZE: Final = 5
#: how long "the registry has no schema N" is believed before N is looked up again
MISSING_TTL_S: Final = 30.0
#: the most ids remembered as missing (expired ones are dropped first when it is reached)
MISSING_MAX: Final = 1024

_ANY_DICT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


class UnknownSchemaError(DecodeError):
    """The record names a schema id this process does not know (yet)."""

    def __init__(self, schema_id: int, reason: str | None = None) -> None:
        super().__init__(
            "unknown_schema", reason or f"no writer schema known for schema id {schema_id}"
        )
        self.schema_id = schema_id


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
    #: Blocking look-up of an unknown id (registry mode); returns the schema text or None, and
    #: raises (`schemas.registry.RegistryUnavailableError`) when the registry can't be asked.
    fetcher: Callable[[int], str | None] | None = None
    #: ids the registry said it does not have (or gave an unusable schema for):
    #: id -> (monotonic time until which that is believed, the reason a dead letter carries)
    missing: dict[int, tuple[float, str]] = field(default_factory=dict)

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

    def to_fetch(self, value: bytes | None) -> int | None:
        """Registry mode: the schema id of a Confluent-framed value that `fetch` should look up
        (unknown, and not recently found missing). Pure CPU."""
        if self.fetcher is None or value is None or len(value) < HEADER_SIZE or value[0] != MAGIC:
            return None
        schema_id = int.from_bytes(value[1:HEADER_SIZE], "big")
        if schema_id in self.readers:
            return None
        gone = self.missing.get(schema_id)
        return None if gone is not None and gone[0] > time.monotonic() else schema_id

    def fetch(self, schema_id: int) -> bool:
        """Registry mode: look an unknown id up (blocking: run it in a thread). True if known.
        False when the registry does not have it (remembered for MISSING_TTL_S); the fetcher's
        error when the registry can't be asked (an outage: retry, don't dead-letter)."""
        if schema_id in self.readers:
            return True
        gone = self.missing.get(schema_id)
        if self.fetcher is None or (gone is not None and gone[0] > time.monotonic()):
            return False
        text = self.fetcher(schema_id)
        if text is None:
            return self._missing(schema_id, f"the schema registry has no schema id {schema_id}")
        try:
            _, parsed = parse_text(text, f"schema id {schema_id}")
        except SchemaFileError as exc:
            log.warning("registry schema %d unusable: %s", schema_id, exc)
            return self._missing(schema_id, f"registry schema id {schema_id} is unusable: {exc}")
        if self.add_reader(schema_id, parsed):
            self.missing.pop(schema_id, None)
            return True
        name = str(parsed.get("name", ""))[:100]
        return self._missing(
            schema_id, f"registry schema id {schema_id} is {name!r}, not a saga message"
        )

    def _missing(self, schema_id: int, reason: str) -> bool:
        now = time.monotonic()
        if len(self.missing) >= MISSING_MAX:
            self.missing = {k: v for k, v in self.missing.items() if v[0] > now}
            while len(self.missing) >= MISSING_MAX:
                del self.missing[next(iter(self.missing))]
        self.missing[schema_id] = (now + MISSING_TTL_S, reason[:300])
        return False

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
            gone = self.missing.get(schema_id)
            raise UnknownSchemaError(schema_id, gone[1] if gone is not None else None)
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
    """The table encode_wire/decode_wire use: the last installed (`use`, `avro.prepare`), else
    registry-less."""
    global _active
    if _active is None:
        _active = SchemaTable.local()
    return _active


def use(table: SchemaTable) -> SchemaTable:
    """Install a table (tests, or a caller that built one itself)."""
    global _active
    _active = table
    return table


def encode_wire(message: Envelope) -> bytes:
    """Confluent-framed Avro for one message (see `schemas.avro.prepare`)."""
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


def schema_to_fetch(value: bytes | None) -> int | None:
    """The unknown schema id a record value names, if the registry should be asked about it."""
    return active().to_fetch(value)
