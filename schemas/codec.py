"""Bytes <-> messages.

Input format is chosen by the first byte, so people can type JSON into kafka-console-producer or
kcat while services exchange Avro: `{` (after optional whitespace) is JSON, 0x00 is the Confluent
wire format (magic byte, 4-byte schema id, Avro body). Anything else is undecodable.

Every failure is a `DecodeError` with a short machine-readable `kind` and a reason a person can act
on; nothing else escapes `decode` (a property-based test holds it to that).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from schemas import framing
from schemas.messages import MESSAGE_TYPES, Envelope
from schemas.wire import DEFAULT_MAX_BYTES, DecodeError, Format

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_JSON_DEPTH",
    "DecodeError",
    "Format",
    "decode",
    "describe",
    "encode",
    "to_model",
]

MAX_JSON_DEPTH = 32

_TYPE_FIELDS = ("messageType", "message_type", "command", "type")
_JSON_START = frozenset(b" \t\r\n{")


def decode(value: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Decode and validate one record value into its message model."""
    if value is None or len(value) == 0:
        raise DecodeError("empty", "the record has no value")
    if len(value) > max_bytes:
        raise DecodeError(
            "too_large", f"value of {len(value)} bytes exceeds the cap of {max_bytes}"
        )
    if value[0] == 0:
        return to_model(framing.decode_wire(value, max_bytes))
    if value[0] not in _JSON_START:
        raise DecodeError("undecodable", "value is neither JSON nor Confluent-framed Avro")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise DecodeError("invalid_json", "top-level JSON value must be an object")
    return to_model(doc)


def to_model(doc: dict[str, Any]) -> Envelope:
    """Validate a decoded document against the model its message type names."""
    type_name = next((doc[f] for f in _TYPE_FIELDS if f in doc), None)
    if type_name is None:
        raise DecodeError("invalid", "missing messageType (or command)")
    model = MESSAGE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if model is None:
        raise DecodeError("unknown_type", f"unknown message type {str(type_name)[:64]!r}")
    if _depth(doc) > MAX_JSON_DEPTH:
        raise DecodeError("invalid", f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise DecodeError("invalid", describe(type_name, exc)) from None


def describe(type_name: str, exc: ValidationError) -> str:
    """One line naming what is missing or wrong, in the wire spelling of the fields."""
    missing: list[str] = []
    wrong: list[str] = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "value"
        (missing if err["type"] == "missing" else wrong).append(
            where if err["type"] == "missing" else f"{where} ({err['msg']})"
        )
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if wrong:
        parts.append("invalid " + "; ".join(wrong))
    return f"{type_name} {' and '.join(parts)}"[:500]


def encode(message: Envelope, fmt: Format = "json") -> bytes:
    """Encode a message for Kafka in the configured output format."""
    if fmt == "avro":
        return framing.encode_wire(message)
    return message.model_dump_json(by_alias=True, exclude_none=True).encode()


def _depth(value: Any) -> int:
    """Containers on the deepest path ({"a": [1]} is 2); stops counting past MAX_JSON_DEPTH.
    Iterative and visiting containers only: a 1 MB document of small arrays costs ~0.1 s."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > MAX_JSON_DEPTH:
                return deepest
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, level + 1))
    return deepest
