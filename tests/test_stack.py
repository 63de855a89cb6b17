"""The real infrastructure answers as the project expects: Kafka round trips with both client
libraries, Lua on Redis, Redis persistence settings, and the three saga topics."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from schemas.config import Settings
from tests.conftest import Infra, create_topics


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def new_topic(infra: Infra) -> Iterator[Callable[[str], str]]:
    """Create uniquely named topics; delete them afterwards (thousands of leftover partitions
    slow the broker's restart and grow its memory)."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = _unique(prefix)
        create_topics(infra.bootstrap, [name], 2)
        made.append(name)
        return name

    yield make
    if made:
        admin = AdminClient({"bootstrap.servers": infra.bootstrap})  # alive until resolved
        for future in admin.delete_topics(made, operation_timeout=30).values():
            future.result(timeout=60)


async def test_aiokafka_round_trip(infra: Infra, new_topic: Callable[[str], str]) -> None:
    topic = new_topic("stack-aiokafka")
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello from aiokafka", key=b"k1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=infra.bootstrap,
        group_id=_unique("g"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=60)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k1", b"hello from aiokafka")


def test_confluent_kafka_round_trip(infra: Infra, new_topic: Callable[[str], str]) -> None:
    topic = new_topic("stack-confluent")
    delivered: list[str | None] = []
    producer = Producer({"bootstrap.servers": infra.bootstrap, "acks": "all"})
    producer.produce(
        topic,
        value=b"hello from confluent-kafka",
        key=b"k2",
        on_delivery=lambda err, _msg: delivered.append(None if err is None else str(err)),
    )
    assert producer.flush(30) == 0
    assert delivered == [None]
    consumer = Consumer(
        {
            "bootstrap.servers": infra.bootstrap,
            "group.id": _unique("g"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 60
        msg = None
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None, "no message within 60 s"
        assert (msg.key(), msg.value()) == (b"k2", b"hello from confluent-kafka")
    finally:
        consumer.close()


def test_redis_runs_lua(infra: Infra) -> None:
    client = redis.Redis.from_url(infra.redis_url, decode_responses=True)
    key = _unique("test-stack-lua")
    try:
        script = (
            "redis.call('HSET', KEYS[1], 'n', ARGV[1]); "
            "return redis.call('HINCRBY', KEYS[1], 'n', 2)"
        )
        assert client.eval(script, 1, key, "40") == 42
        assert client.hget(key, "n") == "42"
    finally:
        client.delete(key)
        client.close()


@pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL") or os.environ.get("SAGA_REDIS_URL")),
    reason="an external Redis: its persistence settings are its operator's choice",
)
def test_redis_persistence_settings(infra: Infra) -> None:
    client = redis.Redis.from_url(infra.redis_url, decode_responses=True)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()


def test_saga_topics_exist(infra: Infra) -> None:
    defaults = Settings.model_fields
    names = [
        os.environ.get("SAGA_COMMANDS_TOPIC", str(defaults["commands_topic"].default)),
        os.environ.get("SAGA_EVENTS_TOPIC", str(defaults["events_topic"].default)),
        os.environ.get("SAGA_DLQ_TOPIC", str(defaults["dlq_topic"].default)),
    ]
    partitions = int(os.environ.get("SAGA_TOPIC_PARTITIONS", "6"))
    meta = AdminClient({"bootstrap.servers": infra.bootstrap}).list_topics(timeout=30)
    found = {n: len(meta.topics[n].partitions) for n in names if n in meta.topics}
    assert found == dict.fromkeys(names, partitions)
