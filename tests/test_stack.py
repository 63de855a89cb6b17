"""The real infrastructure answers as the project expects: Kafka round trips with both client
libraries (built by `infra.kafka`, as everything else builds them), Lua on Redis, Redis
persistence settings, and the three saga topics."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from infra import kafka
from infra import redis as redis_factory
from schemas.config import Settings
from tests.conftest import Infra


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def stack(infra: Infra) -> Settings:
    return Settings(kafka_bootstrap_servers=infra.bootstrap, redis_url=infra.redis_url)


@pytest.fixture
def new_topic(stack: Settings) -> Iterator[Callable[[str], str]]:
    """Create uniquely named topics; delete them afterwards (thousands of leftover partitions
    slow the broker's restart and grow its memory)."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = _unique(prefix)
        kafka.create_topics(stack, [name], 2)
        made.append(name)
        return name

    yield make
    if made:
        kafka.delete_topics(stack, made)


async def test_aiokafka_round_trip(stack: Settings, new_topic: Callable[[str], str]) -> None:
    """A record produced with the project's aiokafka producer comes back to its consumer."""
    topic = new_topic("stack-aiokafka")
    async with kafka.started(kafka.producer(stack)) as producer:
        await producer.send_and_wait(topic, b"hello from aiokafka", key=b"k1")
    async with kafka.started(kafka.consumer(stack, topic, group_id=_unique("g"))) as consumer:
        record = await asyncio.wait_for(consumer.getone(), timeout=60)
    assert (record.key, record.value) == (b"k1", b"hello from aiokafka")


def test_confluent_kafka_round_trip(stack: Settings, new_topic: Callable[[str], str]) -> None:
    """The same with the confluent-kafka (librdkafka) clients."""
    topic = new_topic("stack-confluent")
    delivered: list[str | None] = []
    producer = kafka.sync_producer(stack)
    producer.produce(
        topic,
        value=b"hello from confluent-kafka",
        key=b"k2",
        on_delivery=lambda err, _msg: delivered.append(None if err is None else str(err)),
    )
    assert producer.flush(30) == 0
    assert delivered == [None]
    consumer = kafka.sync_consumer(stack, _unique("g"))
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


def test_redis_runs_lua(stack: Settings) -> None:
    client = redis_factory.sync_client(stack, decode=True)
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
def test_redis_persistence_settings(stack: Settings) -> None:
    client = redis_factory.sync_client(stack, decode=True)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()


def test_saga_topics_exist(stack: Settings) -> None:
    defaults = Settings.model_fields
    names = [
        os.environ.get("SAGA_COMMANDS_TOPIC", str(defaults["commands_topic"].default)),
        os.environ.get("SAGA_EVENTS_TOPIC", str(defaults["events_topic"].default)),
        os.environ.get("SAGA_DLQ_TOPIC", str(defaults["dlq_topic"].default)),
    ]
    partitions = int(os.environ.get("SAGA_TOPIC_PARTITIONS", "6"))
    meta = kafka.admin(stack).list_topics(timeout=30)
    found = {n: len(meta.topics[n].partitions) for n in names if n in meta.topics}
    assert found == dict.fromkeys(names, partitions)
