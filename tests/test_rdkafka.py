"""The hot path's Kafka client (`infra/rdkafka.py`, librdkafka) against the real broker: records
keep key, value and headers; a key lands on the partition the saga's Redis shard is filed under
(murmur2, `keys.partition_of`); a rebalance reaches the async listener on the loop; a commit
holds for the group's next member; hostile cases (no broker, a record too large, a client not
started) are clear `KafkaClientError`s the project classifies."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from infra import kafka
from infra.errors import is_commit_refused, is_too_large, is_transient
from infra.rdkafka import KafkaClientError, Record, TopicPartition
from orchestrator.engine.keys import partition_of
from schemas.config import Settings
from tests.support.kafka import wait_for


class Heard:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.revoked: list[set[TopicPartition]] = []

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        asyncio.get_running_loop()  # raises off the loop
        self.assigned |= assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.revoked.append(set(revoked))


async def read(consumer: kafka.rdkafka.Consumer, n: int, deadline_s: float = 60) -> list[Record]:
    got: list[Record] = []

    async def enough() -> bool:
        batch = await consumer.getmany(timeout_ms=200, max_records=100)
        got.extend(r for rs in batch.values() for r in rs)
        return len(got) >= n

    await wait_for(enough, deadline_s, f"{n} records")
    return got


async def test_round_trip_partitions_listener_and_commit(settings: Settings) -> None:
    topic, group = settings.events_topic, f"g-{uuid.uuid4().hex[:8]}"
    ids = [f"saga-{i}" for i in range(40)]
    producer = kafka.rd_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"v{i}".encode(), sid.encode(), [("h", sid.encode())])
            for i, sid in enumerate(ids)
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    for sid, meta in zip(ids, metas, strict=True):
        assert meta.partition == partition_of(sid, settings.topic_partitions), sid

    heard = Heard()
    consumer = kafka.rd_consumer(settings, group_id=group)
    await consumer.start()
    try:
        consumer.subscribe([topic], listener=heard)
        records = await read(consumer, len(ids))
        assert heard.assigned == {TopicPartition(topic, p) for p in range(3)}
        assert consumer.assignment() == heard.assigned
        by_key = {r.key: r for r in records}
        assert set(by_key) == {s.encode() for s in ids}
        r = by_key[b"saga-7"]
        assert (r.value, r.headers, r.topic) == (b"v7", [("h", b"saga-7")], topic)
        ends: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            ends[tp] = max(ends.get(tp, 0), rec.offset + 1)
        await consumer.commit(ends)
        for tp, end in ends.items():
            assert await consumer.position(tp) == end
    finally:
        await consumer.stop()
    assert heard.revoked and heard.revoked[-1] == heard.assigned  # close revokes, on the loop

    # the group's next member starts after the commit: one new record is all it reads
    again = kafka.rd_consumer(settings, group_id=group)
    await again.start()
    try:
        again.subscribe([topic])
        producer = kafka.rd_producer(settings)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"after", b"saga-1")
        finally:
            await producer.stop()
        [after] = await read(again, 1)
        assert after.value == b"after"
    finally:
        await again.stop()


async def test_no_broker_is_a_transient_error() -> None:
    """Nothing listens on the port: `start` fails with an error the loops wait out."""
    s = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    for client in (kafka.rd_producer(s), kafka.rd_consumer(s, group_id="g")):
        with pytest.raises(KafkaClientError) as err:
            await client.start()
        assert is_transient(err.value), err.value


async def test_not_started_and_too_large(settings: Settings) -> None:
    """A send before `start` is refused at once; a record over the producer's limit is a
    record error (dead-lettered by the daemon, never retried), named by its code."""
    producer = kafka.rd_producer(settings, **{"message.max.bytes": 10_000})
    with pytest.raises(KafkaClientError) as err:
        await producer.send(settings.events_topic, b"x")
    assert not is_too_large(err.value)
    await producer.start()
    try:
        with pytest.raises(KafkaClientError) as err:
            await (await producer.send(settings.events_topic, b"x" * 20_000, b"k"))
        assert is_too_large(err.value) and err.value.name == "MSG_SIZE_TOO_LARGE"
        meta = await producer.send_and_wait(settings.events_topic, b"small", b"k")
        assert meta.topic == settings.events_topic  # the producer is still fine
        assert await producer.partitions_for(settings.events_topic) == {0, 1, 2}
        with pytest.raises(KafkaClientError):
            await producer.partitions_for(f"no-such-topic-{uuid.uuid4().hex[:6]}")
    finally:
        await producer.stop()


def test_commit_refusals_are_told_apart() -> None:
    """A commit the group no longer takes (it rebalanced) is not an outage to wait out."""
    from confluent_kafka import KafkaError

    moved = KafkaClientError(KafkaError(KafkaError.ILLEGAL_GENERATION))
    away = KafkaClientError(KafkaError(KafkaError._TRANSPORT))
    assert is_commit_refused(moved) and not is_transient(moved)
    assert is_transient(away) and not is_commit_refused(away)
