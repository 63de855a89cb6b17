"""The domain event of a choreographed saga: what services publish to each other on an event
topic (`choreo-events` in the sample), with no orchestrator in between.

    {"eventId": "e-1", "type": "OrderPlaced", "sagaId": "order-7",
     "data": {"items": [{"productId": "sku-1", "quantity": 2}], "amount": "42.50"}}

Only `type` (or `eventType`) and `sagaId` are required, so a person can send one with kcat. An
event without `eventId` is known by its `saga-message-id` header, else by its log position
(`event_id_of`): a redelivered record keeps both, so it is still recognised.

Events are JSON only (no Avro framing): the event topic is a contract between the services of
one choreography, not part of the orchestrator's wire. Decoding is held to the same rules as
`schemas.codec`: a size cap before parsing, strict JSON, a depth bound, unknown fields refused,
and every failure a `DecodeError` with a kind and a reason.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from schemas.codec import MAX_JSON_DEPTH, describe
from schemas.dlq import Headers, header
from schemas.headers import H_CORRELATION_ID, H_MESSAGE_ID, H_MESSAGE_TYPE, H_SAGA_ID
from schemas.messages import Name, SagaId, SagaType, ShortText, now_utc
from schemas.wire import DEFAULT_MAX_BYTES, DecodeError

#: the `saga-message-type` header of an emitted event: readers route on it without decoding
MESSAGE_TYPE = "DomainEvent"
_JSON_START = frozenset(b" \t\r\n{[")


class DomainEvent(BaseModel):
    """One event of a choreographed saga (camelCase on the wire, as every message here)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
    )

    event_type: Name = Field(validation_alias=AliasChoices("eventType", "event_type", "type"))
    saga_id: SagaId
    #: empty: not stated (the dedupe id then comes from the record, see `event_id_of`)
    event_id: ShortText = ""
    saga_type: SagaType = ""
    correlation_id: ShortText | None = None
    #: the id of the event this one reacts to
    causation_id: ShortText | None = None
    #: the service that published it
    source: ShortText = ""
    time: datetime = Field(default_factory=now_utc)
    data: dict[str, Any] = Field(default_factory=dict)


def decode_event(value: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> DomainEvent:
    """One record value as a `DomainEvent`; `DecodeError` (kind, reason) for anything else."""
    if value is None or len(value) == 0:
        raise DecodeError("empty", "the record has no value")
    if len(value) > max_bytes:
        raise DecodeError(
            "too_large", f"value of {len(value)} bytes exceeds the cap of {max_bytes}"
        )
    if value[0] not in _JSON_START:
        raise DecodeError("undecodable", "an event is a JSON object; this value is not JSON")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise DecodeError("invalid_json", "an event is a JSON object, not an array or a value")
    if _depth(doc) > MAX_JSON_DEPTH:
        raise DecodeError("invalid", f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return DomainEvent.model_validate(doc)
    except ValidationError as exc:
        named = next((doc[k] for k in ("eventType", "event_type", "type") if k in doc), "event")
        reason = describe(str(named)[:64], exc).replace("missing eventType", "missing type")
        raise DecodeError("invalid", reason) from None


def encode_event(event: DomainEvent) -> bytes:
    return event.model_dump_json(by_alias=True, exclude_none=True).encode()


def event_headers(event: DomainEvent) -> Headers:
    """Headers of an emitted event (routing and dedupe without decoding)."""
    headers: Headers = [
        (H_MESSAGE_TYPE, MESSAGE_TYPE.encode()),
        (H_SAGA_ID, event.saga_id.encode()),
        (H_MESSAGE_ID, event.event_id.encode()),
    ]
    if event.correlation_id:
        headers.append((H_CORRELATION_ID, event.correlation_id.encode()))
    return headers


def event_id_of(
    event: DomainEvent, headers: Headers, topic: str, partition: int, offset: int
) -> str:
    """The event's dedupe id: its `eventId`, else the `saga-message-id` header, else its log
    position (`@<topic>/<partition>/<offset>`), which a redelivery keeps."""
    if event.event_id:
        return event.event_id
    from_header = header(headers, H_MESSAGE_ID)
    if from_header and len(from_header) <= 256:
        return from_header
    return f"@{topic}/{partition}/{offset}"


def derived_id(*parts: str) -> str:
    """A deterministic id from parts joined by ':', hashed when longer than an id may be."""
    text = ":".join(parts)
    return text if len(text) <= 256 else hashlib.sha256(text.encode()).hexdigest()


def _depth(value: Any) -> int:
    """Containers on the deepest path; stops counting past MAX_JSON_DEPTH."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    return deepest
