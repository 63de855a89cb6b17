"""A StartOrder in the Confluent wire format through a real Kafka topic, read back with aiokafka
(raw bytes, as the orchestrator consumes) and decoded with `schemas.codec.decode`. The registry
is a real one (Apicurio Registry from scripts/stack_registry; tests/support/registry.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from confluent_kafka import KafkaError, Message

from infra import kafka
from schemas import avro, codec
from schemas.config import Settings
from schemas.headers import H_MESSAGE_TYPE
from schemas.messages import OrderItem, StartOrder
from schemas.registry import make_client
from tests.support.registry import RealRegistry, real_registry, registry_url

T0 = datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)


def start_order(saga_id: str) -> StartOrder:
    return StartOrder(
        saga_id=saga_id,
        time=T0,
        customer_id="cust-1",
        items=[OrderItem(product_id="sku-1", quantity=2)],
        amount=Decimal("42.00"),
        currency="EUR",
        payment_method="card",
        shipping_address="1 Main St",
    )


@pytest.fixture
def registry() -> Iterator[RealRegistry]:
    with real_registry(registry_url()) as reg:
        yield reg


@pytest.fixture(autouse=True)
def _registry_less() -> Iterator[None]:
    avro.use(avro.SchemaTable.local())
    yield
    avro.use(avro.SchemaTable.local())


async def produce(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = kafka.sync_producer(settings)
    producer.produce(
        topic,
        key=key,
        value=value,
        headers=[(H_MESSAGE_TYPE, b"StartOrder")],
        on_delivery=delivered,
    )
    remaining = await asyncio.to_thread(producer.flush, 30)
    assert remaining == 0 and not errors, errors


async def read(settings: Settings, topic: str, count: int) -> list[ConsumerRecord[Any, Any]]:
    consumer = kafka.consumer(settings, topic, group_id=None)
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    assert len(records) == count, f"read {len(records)} of {count} records from {topic}"
    return records


async def test_registry_less_avro_through_kafka(settings: Settings) -> None:
    msg = start_order("broker-avro-1")
    value = codec.encode(msg, "avro")
    assert value[0] == 0
    await produce(settings, settings.commands_topic, msg.saga_id.encode(), value)

    (record,) = await read(settings, settings.commands_topic, 1)
    assert record.key == b"broker-avro-1"
    assert record.value == value
    assert (H_MESSAGE_TYPE, b"StartOrder") in list(record.headers)
    assert codec.decode(record.value) == msg


async def test_confluent_serializer_with_registry_through_kafka(
    settings: Settings, registry: RealRegistry
) -> None:
    """Produced by confluent-kafka's own AvroSerializer (record-name subject), consumed with
    aiokafka, decoded by our codec after `prepare()` against the same registry."""
    from confluent_kafka.schema_registry import record_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    msg = start_order("broker-avro-2")
    serializer = AvroSerializer(
        make_client(registry.url),
        avro.default_schema_set().current["StartOrder"].text,
        avro.to_record,
        {"subject.name.strategy": record_subject_name_strategy},
    )
    value = serializer(msg, SerializationContext(settings.commands_topic, MessageField.VALUE))
    assert value is not None
    await produce(settings, settings.commands_topic, msg.saga_id.encode(), value)

    table = await asyncio.to_thread(
        avro.prepare, Settings(schema_registry_url=registry.url)
    )  # start-up, off the event loop
    assert int.from_bytes(value[1:5], "big") == table.ids()["StartOrder"]
    (record,) = await read(settings, settings.commands_topic, 1)
    assert codec.decode(record.value) == msg
