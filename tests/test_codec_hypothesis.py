"""Hostile input: any byte string either decodes to a valid message or raises `DecodeError` with a
kind and a reason; never another exception, never a long stall. Plus generated round trips.

Hypothesis runs derandomized (the same examples every run) with no example database, so the
suite is deterministic; the per-example deadline is generous and only there to catch stalls.
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import avro, codec
from schemas.messages import (
    SAGA_ID_PATTERN,
    Envelope,
    OrderItem,
    SagaCommand,
    StartOrder,
    StepFailed,
)

HOSTILE = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIP = settings(HOSTILE, max_examples=150)

TABLE = avro.SchemaTable.local()
KNOWN_IDS = sorted(TABLE.readers)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="module")
def _registry_less() -> Iterator[None]:
    avro.use(TABLE)
    yield
    avro.use(avro.SchemaTable.local())


def _valid_values() -> list[bytes]:
    e: dict[str, Any] = {"saga_id": "s-1", "time": T0, "correlation_id": "c"}
    msgs: list[Envelope] = [
        StartOrder(
            **e, customer_id="c", items=[OrderItem(product_id="p", quantity=2)] * 3,
            amount=Decimal("12.34"), shipping_address="somewhere",
        ),
        SagaCommand(
            **e, participant="payment", command_type="ProcessPayment", step="process_payment",
            attempt=1, data={"a": [1, {"b": None}]}, original_result={"k": "v"},
        ),
        StepFailed(
            **e, step="s", attempt=1, command_id="x", command_type="X", retryable=True, reason="r"
        ),
    ]  # fmt: skip
    return [codec.encode(m, fmt) for m in msgs for fmt in ("avro", "json")]


VALID = _valid_values()
VALID_AVRO = [v for v in VALID if v[0] == 0]


def decodes_or_refuses(value: bytes) -> None:
    """The property: a model, or a DecodeError that says why. Anything else fails the test."""
    try:
        msg = codec.decode(value)
    except codec.DecodeError as exc:
        assert exc.kind and exc.reason, exc
        assert len(exc.reason) <= 500
        return
    assert isinstance(msg, Envelope)


def zigzag_varint(n: int) -> bytes:
    """Avro's long encoding (zig-zag, then base-128 varint), for any Python int."""
    z = (n << 1) ^ (n >> 127)
    out = bytearray()
    while True:
        b, z = z & 0x7F, z >> 7
        out.append(b | (0x80 if z else 0))
        if not z:
            return bytes(out)


# ------------------------------------------------------------------------------ raw bytes


@HOSTILE
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x00")
@example(b"\x00\x00\x00\x00")
@example(b"\xef\xbb\xbf{}")
def test_any_bytes(value: bytes) -> None:
    decodes_or_refuses(value)


@HOSTILE
@given(st.binary(max_size=4096))
def test_magic_byte_then_anything(body: bytes) -> None:
    decodes_or_refuses(b"\x00" + body)


@HOSTILE
@given(st.sampled_from(KNOWN_IDS), st.binary(max_size=4096))
def test_known_schema_id_then_anything(schema_id: int, body: bytes) -> None:
    decodes_or_refuses(avro.header(schema_id) + body)


# ------------------------------------------------------------------------------ damaged Avro


@HOSTILE
@given(st.sampled_from(VALID_AVRO), st.data())
def test_truncated_avro(value: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(value) - 1))
    decodes_or_refuses(value[:cut])


@HOSTILE
@given(st.sampled_from(VALID_AVRO), st.data())
def test_flipped_inserted_and_deleted_bytes(value: bytes, data: st.DataObject) -> None:
    buf = bytearray(value)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(5, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            buf[at] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[at]
    decodes_or_refuses(bytes(buf))


LENGTHS = st.one_of(
    st.integers(-(2**63), -1),
    st.integers(2**20, 2**63 - 1),
    st.sampled_from([-1, -(2**63), 2**62, 2**31, 2**31 - 1, -(2**31)]),
)


@HOSTILE
@given(st.sampled_from(VALID_AVRO), st.data(), LENGTHS)
def test_hostile_varint_lengths(value: bytes, data: st.DataObject, length: int) -> None:
    """Replace a byte of a valid body with a huge or negative length prefix (strings, bytes,
    array and map block counts are all varints)."""
    at = data.draw(st.integers(5, len(value) - 1))
    decodes_or_refuses(value[:at] + zigzag_varint(length) + value[at + 1 :])


def test_huge_length_claims_do_not_allocate() -> None:
    """A 5-byte frame header, then a string length of 2**62 (the first field is messageId)."""
    hostile = [
        avro.header(TABLE.ids()["StartOrder"]) + zigzag_varint(n) + b"abc" for n in (2**62, -5)
    ]
    for value in hostile:
        tracemalloc.start()
        try:
            with pytest.raises(codec.DecodeError) as err:
                codec.decode(value)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert err.value.kind == "invalid_avro"
        assert peak < 1_000_000


def test_array_block_count_of_2_62_stops_at_the_end_of_the_input() -> None:
    w, doc = TABLE.record(
        StartOrder(
            saga_id="s",
            customer_id="c",
            items=[OrderItem(product_id="p", quantity=1)],
            amount=Decimal(1),
        )
    )
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, w.schema, doc)
    body = buf.getvalue()
    one_item = b"\x02\x02p\x02\x00"  # block count 1, productId "p", quantity 1, end of blocks
    at = body.index(one_item)
    hostile = w.header + body[:at] + zigzag_varint(2**62) + b"\x02p\x02" * 50_000
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(hostile)
    assert err.value.kind == "invalid_avro"


# ------------------------------------------------------------------------------ JSON-ish text


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
FIELD_NAMES = st.sampled_from(
    ["messageType", "command", "type", "sagaId", "customerId", "items", "amount", "data", "time",
     "attempt", "step", "retryable", "reason", "result", "action", "timerKind", "productId"]
)  # fmt: skip
TYPE_NAMES = st.sampled_from(
    ["StartOrder", "StartSaga", "SagaCommand", "StepCompleted", "StepFailed", "StepCompensated",
     "TimerFired", "OperatorCommand", "Nope", ""]
)  # fmt: skip


@settings(HOSTILE, max_examples=250)
@given(TYPE_NAMES, st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=10))
def test_json_objects_with_confused_fields(type_name: str, fields: dict[str, Any]) -> None:
    doc = {"messageType": type_name, "sagaId": "s-1", **fields}
    try:
        value = orjson.dumps(doc)
    except TypeError:  # integers outside 64 bits: orjson will not write them, fine
        value = b'{"messageType": "' + type_name.encode() + b'"}'
    decodes_or_refuses(value)


TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"[", b"{", b"]", b"}", b",", b":",
          b'"', b"\\u0000", b"\\ud800", b"null", b"\x00", b"\xff", b"9" * 400]  # fmt: skip


@HOSTILE
@given(st.sampled_from(VALID[1::2]), st.data())
def test_json_with_spliced_tokens(value: bytes, data: st.DataObject) -> None:
    buf = bytearray(value)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(buf)))
        buf[at:at] = data.draw(st.sampled_from(TOKENS))
    decodes_or_refuses(bytes(buf))


@HOSTILE
@given(st.integers(1, 200_000), st.sampled_from([b"[", b'{"a":']))
@example(100_000, b"[")
@example(33, b"[")
@example(31, b"[")
def test_deep_nesting(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    nested = opener * depth + b"1" + closer * depth
    decodes_or_refuses(b'{"messageType":"StartSaga","sagaId":"s","data":{"x":' + nested + b"}}")
    decodes_or_refuses(nested)


@settings(HOSTILE, max_examples=60)
@given(st.integers(0, 100_000), st.sampled_from([b"1", b'{"productId":"p","quantity":1}', b"[]"]))
def test_huge_arrays(n: int, item: bytes) -> None:
    items = b",".join([item] * n)
    decodes_or_refuses(
        b'{"messageType":"StartOrder","sagaId":"s","customerId":"c","amount":"1","items":['
        + items
        + b"]}"
    )


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"nan", b"Infinity1"]
)
def test_non_finite_numbers_are_refused(literal: bytes) -> None:
    value = (
        b'{"messageType":"StartOrder","sagaId":"s","customerId":"c",'
        b'"items":[{"productId":"p","quantity":1}],"amount":' + literal + b"}"
    )
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(value)
    assert err.value.kind in ("invalid_json", "invalid")


# ------------------------------------------------------------------------------ round trips


def _ms(d: datetime) -> datetime:
    return d.replace(microsecond=d.microsecond // 1000 * 1000)


IDS_ = st.from_regex(SAGA_ID_PATTERN, fullmatch=True)
NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
WORDS = st.text(min_size=1, max_size=40).map(str.strip).filter(bool)
TIMES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(_ms)
SAFE_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # orjson reads wider integers as floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPES = st.fixed_dictionaries(
    {"saga_id": IDS_, "time": TIMES},
    optional={
        "correlation_id": WORDS,
        "causation_id": WORDS,
        "traceparent": WORDS,
        "saga_type": NAMES,
    },
)

START_ORDERS = st.builds(
    lambda env, **kw: StartOrder(**env, **kw),
    ENVELOPES,
    customer_id=WORDS,
    items=st.lists(
        st.builds(
            lambda p, q: OrderItem(product_id=p, quantity=q), WORDS, st.integers(1, 1_000_000)
        ),
        min_size=1,
        max_size=5,
    ),
    amount=st.decimals(min_value=0, max_value=Decimal("1e12"), places=2),
    currency=st.from_regex(r"[A-Z]{3}", fullmatch=True),
    payment_method=WORDS,
    shipping_address=st.none() | WORDS,
    order_id=st.none() | WORDS,
)
COMMANDS = st.builds(
    lambda env, **kw: SagaCommand(**env, **kw),
    ENVELOPES,
    participant=NAMES,
    command_type=NAMES,
    step=NAMES,
    attempt=st.integers(1, 1000),
    compensation=st.booleans(),
    data=st.dictionaries(st.text(max_size=8), SAFE_JSON, max_size=5),
    original_result=st.none()
    | st.dictionaries(st.text(max_size=10).map(str.strip), WORDS, max_size=3),
)
FAILURES = st.builds(
    lambda env, **kw: StepFailed(**env, **kw),
    ENVELOPES,
    step=NAMES,
    attempt=st.integers(1, 1000),
    command_id=WORDS,
    command_type=NAMES,
    retryable=st.booleans(),
    reason=st.text(max_size=200).map(str.strip),
)


@ROUND_TRIP
@given(st.one_of(START_ORDERS, COMMANDS, FAILURES), st.sampled_from(["json", "avro"]))
def test_generated_messages_round_trip(message: Envelope, fmt: codec.Format) -> None:
    assert codec.decode(codec.encode(message, fmt)) == message
