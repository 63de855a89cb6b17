"""Round trips of every message in JSON and in Avro (registry-less and through a registry), the
Confluent framing, interop with confluent-kafka's own Avro serde, and the codec's error kinds.

"Through a registry" is a real one: Apicurio Registry's Confluent-compatible API, started by
scripts/stack_registry (tests/support/registry.py), emptied before each test."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from schemas import avro, codec
from schemas.config import Settings
from schemas.messages import (
    MESSAGE_TYPES,
    Envelope,
    OperatorCommand,
    OrderItem,
    SagaCommand,
    StartOrder,
    StartSaga,
    StepCompensated,
    StepCompleted,
    StepFailed,
    TimerFired,
)
from schemas.registry import RegistryError, make_client, subject_for
from tests.support.registry import RealRegistry, real_registry, registry_url

T0 = datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)  # millisecond precision, as Avro keeps it
ENVELOPE: dict[str, Any] = {
    "message_id": "msg-1",
    "saga_id": "order-77",
    "correlation_id": "corr-1",
    "causation_id": "cause-1",
    "time": T0,
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}
REPLY: dict[str, Any] = {
    "step": "process_payment",
    "attempt": 2,
    "command_id": "order-77/process_payment/ProcessPayment/2",
    "command_type": "ProcessPayment",
}


def full_messages() -> list[Envelope]:
    """One of each message type with every optional field set."""
    return [
        StartOrder(
            **ENVELOPE,
            order_id="A-1",
            customer_id="cust-1",
            items=[
                OrderItem(product_id="sku-1", quantity=2),
                OrderItem(product_id="é", quantity=1),
            ],
            amount=Decimal("99.90"),
            currency="EUR",
            payment_method="invoice",
            shipping_address="1 Main St\nSpringfield",
        ),
        StartSaga(
            **ENVELOPE,
            saga_type="refund",
            data={"orderId": "A-1", "lines": [1, 2.5, None, True], "nested": {"k": {"x": "ü"}}},
        ),
        SagaCommand(
            **ENVELOPE,
            participant="payment",
            command_type="RefundPayment",
            step="process_payment",
            attempt=1,
            compensation=True,
            data={"amount": "99.90", "orderId": "A-1"},
            original_result={"paymentId": "pay-1"},
        ),
        StepCompleted(**ENVELOPE, **REPLY, result={"paymentId": "pay-1", "note": ""}),
        StepFailed(**ENVELOPE, **REPLY, retryable=True, reason="card declined"),
        StepCompensated(**ENVELOPE, **REPLY, compensation=True),
        TimerFired(**ENVELOPE, timer_kind="timeout", step="create_shipment", attempt=3),
        OperatorCommand(
            **ENVELOPE,
            action="skip_compensation",
            step="create_shipment",
            reason="done by hand",
            operator="alice",
        ),
    ]


def minimal_messages() -> list[Envelope]:
    """One of each message type with only what is required (defaults and None elsewhere)."""
    e: dict[str, Any] = {"saga_id": "s-1", "time": T0}
    r: dict[str, Any] = {**e, **REPLY}
    return [
        StartOrder(
            **e, customer_id="c", items=[OrderItem(product_id="p", quantity=1)], amount=Decimal(10)
        ),
        StartSaga(**e),
        SagaCommand(**e, participant="inventory", command_type="ReserveItems", step="s", attempt=1),
        StepCompleted(**r),
        StepFailed(**r, retryable=False, reason=""),
        StepCompensated(**r),
        TimerFired(**e, timer_kind="retry", step="s", attempt=1),
        OperatorCommand(**e, action="abort"),
    ]


ALL = full_messages() + minimal_messages()
IDS = [f"{type(m).__name__}-{'full' if i < 8 else 'min'}" for i, m in enumerate(ALL)]


@pytest.fixture(autouse=True)
def _registry_less() -> Iterator[None]:
    avro.use(avro.SchemaTable.local())
    yield
    avro.use(avro.SchemaTable.local())


def test_the_samples_cover_every_message_type() -> None:
    assert {type(m).__name__ for m in ALL} == set(MESSAGE_TYPES)


# ------------------------------------------------------------------------------ JSON


@pytest.mark.parametrize("message", ALL, ids=IDS)
def test_json_round_trip(message: Envelope) -> None:
    value = codec.encode(message, "json")
    assert value.startswith(b"{")
    assert codec.decode(value) == message


def test_json_is_camel_case_and_omits_none() -> None:
    value = codec.encode(minimal_messages()[0], "json")
    assert b'"sagaId":"s-1"' in value and b'"customerId"' in value
    assert b"shippingAddress" not in value and b"saga_id" not in value


def test_a_message_without_saga_type_decodes_with_an_empty_one() -> None:
    """sagaType is optional and names no saga by default; the empty value survives Avro too."""
    msg = codec.decode(
        b'{"messageType":"TimerFired","sagaId":"s","timerKind":"retry","step":"x","attempt":1}'
    )
    assert msg.saga_type == ""
    assert codec.decode(codec.encode(msg, "avro")).saga_type == ""


# ------------------------------------------------------------------------------ Avro, no registry


@pytest.mark.parametrize("message", ALL, ids=IDS)
def test_avro_round_trip_without_registry(message: Envelope) -> None:
    value = codec.encode(message, "avro")
    assert value[0] == 0
    assert (
        int.from_bytes(value[1:5], "big") == avro.SchemaTable.local().ids()[type(message).__name__]
    )
    assert codec.decode(value) == message


def test_avro_is_smaller_than_json() -> None:
    for m in full_messages():
        assert len(codec.encode(m, "avro")) < len(codec.encode(m, "json"))


def test_avro_keeps_milliseconds_and_two_decimal_places() -> None:
    msg = StartOrder(
        saga_id="s", time=datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), customer_id="c",
        items=[OrderItem(product_id="p", quantity=1)], amount=Decimal("7.5"),
    )  # fmt: skip
    out = codec.decode(codec.encode(msg, "avro"))
    assert isinstance(out, StartOrder)
    assert out.time == datetime(2025, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert out.amount == Decimal("7.5") and str(out.amount) == "7.50"


def test_free_form_data_travels_as_json_text() -> None:
    msg = StartSaga(saga_id="s", time=T0, data={"when": T0, "amount": Decimal("1.10"), "n": [1]})
    value = codec.encode(msg, "avro")
    sf = avro.default_schema_set().current["StartSaga"]
    raw = fastavro.schemaless_reader(io.BytesIO(value[5:]), sf.parsed, None)
    assert isinstance(raw, dict)
    assert raw["data"] == '{"when":"2025-03-04T05:06:07.891000Z","amount":"1.10","n":[1]}'
    # the same JSON form the JSON codec produces
    assert codec.decode(value) == codec.decode(codec.encode(msg, "json"))


def test_to_record_and_from_record_are_inverse() -> None:
    for m in full_messages():
        record = avro.to_record(m)
        assert codec.to_model(avro.from_record(record)) == m


def test_json_input_is_accepted_whatever_the_output_format() -> None:
    assert (
        codec.decode(b' {"sagaId":"s","command":"OperatorCommand","action":"abort"}').saga_id == "s"
    )


# ------------------------------------------------------------------------------ Avro errors


def _frame(schema_id: int, body: bytes) -> bytes:
    return avro.header(schema_id) + body


def _expect(value: bytes, kind: str, text: str = "") -> codec.DecodeError:
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(value)
    assert err.value.kind == kind, err.value
    assert text in err.value.reason
    return err.value


def test_unknown_schema_id() -> None:
    err = _expect(_frame(12345, b"\x02"), "unknown_schema", "schema id 12345")
    assert isinstance(err, avro.UnknownSchemaError) and err.schema_id == 12345
    assert avro.fetch_schema(12345) is False  # registry-less: nowhere to look


def test_header_only_and_truncated_and_trailing_bytes() -> None:
    _expect(b"\x00\x00\x00", "invalid_avro", "not a Confluent frame")
    value = codec.encode(full_messages()[0], "avro")
    _expect(value[:-3], "invalid_avro", "EOFError")
    _expect(value + b"\x00", "invalid_avro", "1 bytes after the Avro body")


def test_record_and_message_type_must_agree() -> None:
    w, doc = avro.active().record(full_messages()[4])  # StepFailed
    doc["messageType"] = "StepCompleted"
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, w.schema, doc)
    _expect(
        w.header + buf.getvalue(), "invalid", "a StepFailed record says messageType 'StepCompleted'"
    )


def test_data_must_be_a_json_object() -> None:
    w, doc = avro.active().record(StartSaga(saga_id="s"))
    for text, reason in [("[1]", "must hold a JSON object"), ("{", "not valid JSON"), ("NaN", "")]:
        doc["data"] = text
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w.schema, doc)
        _expect(w.header + buf.getvalue(), "invalid", reason)


def test_size_caps() -> None:
    value = codec.encode(full_messages()[1], "avro")
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(value, max_bytes=len(value) - 1)
    assert err.value.kind == "too_large"
    with pytest.raises(codec.DecodeError) as err:
        avro.decode_wire(value, max_bytes=10)
    assert err.value.kind == "too_large"
    avro.use(avro.SchemaTable.local(max_bytes=10))
    with pytest.raises(codec.DecodeError):
        avro.decode_wire(value)
    # the codec's cap wins over the table's when it is passed in
    assert codec.decode(value, max_bytes=len(value)) == full_messages()[1]


def test_validation_still_applies_to_avro() -> None:
    w, doc = avro.active().record(full_messages()[0])
    doc["currency"] = "euro"
    doc["sagaId"] = "has space"
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, w.schema, doc)
    err = _expect(w.header + buf.getvalue(), "invalid", "StartOrder invalid")
    assert "sagaId" in err.reason and "currency" in err.reason


def test_prepare_without_registry_is_local() -> None:
    table = avro.prepare(Settings(max_message_bytes=4096))
    assert table.mode == "local" and table.max_bytes == 4096
    assert avro.active() is table
    ids = table.ids()
    assert ids and all(i >= avro.LOCAL_ID_BASE for i in ids.values()), ids


# ------------------------------------------------------------------------------ with a registry


@pytest.fixture(scope="module")
def registry_upstream() -> str:
    return registry_url()


@pytest.fixture
def registry(registry_upstream: str) -> Iterator[RealRegistry]:
    with real_registry(registry_upstream) as reg:
        yield reg


def registry_ids(registry: RealRegistry) -> dict[str, int]:
    """Each message type's id as the registry itself lists it (its latest version)."""
    return {n: registry.subjects[subject_for(n)][-1] for n in MESSAGE_TYPES}


def test_prepare_registers_and_caches_ids(registry: RealRegistry) -> None:
    table = avro.prepare(Settings(schema_registry_url=registry.url))
    assert table.mode == "registry"
    assert set(registry.subjects) == {subject_for(n) for n in MESSAGE_TYPES}
    assert table.ids() == registry_ids(registry)  # the registry's ids, not local ones
    assert all(i < avro.LOCAL_ID_BASE for i in table.ids().values())
    asked = len(registry.requests)
    for _ in range(20):
        for m in ALL:
            value = codec.encode(m, "avro")
            assert int.from_bytes(value[1:5], "big") == table.ids()[type(m).__name__]
            assert codec.decode(value) == m
    assert len(registry.requests) == asked  # nothing per message


@pytest.mark.parametrize("message", full_messages(), ids=lambda m: type(m).__name__)
def test_avro_round_trip_with_registry(registry: RealRegistry, message: Envelope) -> None:
    avro.prepare(Settings(schema_registry_url=registry.url))
    assert codec.decode(codec.encode(message, "avro")) == message


def test_registry_mode_reads_registry_less_records(registry: RealRegistry) -> None:
    local = avro.SchemaTable.local().encode(full_messages()[0])
    avro.prepare(Settings(schema_registry_url=registry.url))
    assert codec.decode(local) == full_messages()[0]


def test_prepare_prefetches_older_versions(registry: RealRegistry) -> None:
    from confluent_kafka.schema_registry import Schema

    v1 = avro.default_schema_set().history["StartOrder"][0]
    client = make_client(registry.url)
    v1_id = client.register_schema(subject_for("StartOrder"), Schema(v1.text, "AVRO"))
    table = avro.prepare(Settings(schema_registry_url=registry.url))
    assert v1_id in table.readers and table.ids()["StartOrder"] != v1_id
    asked = len(registry.requests)
    buf = io.BytesIO()
    doc = avro.to_record(minimal_messages()[0])
    fastavro.schemaless_writer(buf, v1.parsed, doc)
    msg = codec.decode(avro.header(v1_id) + buf.getvalue())
    assert isinstance(msg, StartOrder) and msg.shipping_address is None
    assert len(registry.requests) == asked


def test_unknown_id_is_fetched_on_request_only(registry: RealRegistry) -> None:
    from confluent_kafka.schema_registry import Schema

    avro.prepare(Settings(schema_registry_url=registry.url))
    # another producer registers a newer StepFailed (with a new optional field) after we started
    raw = dict(avro.default_schema_set().current["StepFailed"].raw)
    raw["fields"] = [
        *raw["fields"],
        {"name": "errorCode", "type": ["null", "string"], "default": None},
    ]
    newer = fastavro.parse_schema(raw)
    import json

    new_id = make_client(registry.url).register_schema(
        subject_for("StepFailed"), Schema(json.dumps(raw), "AVRO")
    )
    _, doc = avro.active().record(full_messages()[4])
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, newer, {**doc, "errorCode": "E42"})
    value = avro.header(new_id) + buf.getvalue()
    asked = len(registry.requests)
    with pytest.raises(avro.UnknownSchemaError):
        codec.decode(value)
    assert len(registry.requests) == asked  # decode never blocks on the registry
    assert avro.fetch_schema(new_id) is True  # what the daemon runs in a thread, then retries
    assert codec.decode(value) == full_messages()[4]  # the unknown field is dropped
    assert avro.fetch_schema(999_999) is False  # 404: poison, not an outage


def test_lookup_only_mode(registry: RealRegistry) -> None:
    with pytest.raises(RegistryError, match="HTTP 404"):
        avro.prepare(Settings(schema_registry_url=registry.url), auto_register=False)
    avro.prepare(Settings(schema_registry_url=registry.url))
    table = avro.prepare(Settings(schema_registry_url=registry.url), auto_register=False)
    assert table.ids() == registry_ids(registry)


def test_prepare_with_an_unreachable_registry() -> None:
    with pytest.raises(RegistryError) as err:
        avro.prepare(Settings(schema_registry_url="http://127.0.0.1:9", connect_timeout_s=2))
    assert str(err.value).startswith("schema registry at http://127.0.0.1:9 unreachable:")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------ interop


def test_interop_with_confluent_avro_serde(registry: RealRegistry) -> None:
    """confluent-kafka's AvroSerializer output decodes with our codec, and ours with its
    AvroDeserializer: the same framing, ids and record-name subjects."""
    from confluent_kafka.schema_registry import record_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = make_client(registry.url)
    ctx = SerializationContext("saga-commands", MessageField.VALUE)
    avro.prepare(Settings(schema_registry_url=registry.url))
    for m in full_messages():
        sf = avro.default_schema_set().current[type(m).__name__]
        serializer = AvroSerializer(
            client,
            sf.text,
            avro.to_record,
            {"subject.name.strategy": record_subject_name_strategy, "auto.register.schemas": False},
        )
        theirs = serializer(m, ctx)
        assert theirs is not None
        assert theirs == codec.encode(m, "avro")
        assert codec.decode(theirs) == m
        back = AvroDeserializer(client)(codec.encode(m, "avro"), ctx)
        assert isinstance(back, dict)
        assert codec.to_model(avro.from_record(back)) == m
