"""The worker's outbox (participants/outbox.py): a batch's replies and dead letters are produced
together when the batch ends, all acknowledged before `flush` returns; a record the producer
refuses at once (too large) is logged, counted and dropped, and does not stop the others."""

from __future__ import annotations

import asyncio
import logging

import pytest

from infra import kafka
from participants.outbox import Outbox
from participants.runtime import Infra, WorkerStats
from participants.testing import TopicReader
from schemas.config import Settings

LOG = logging.getLogger("test.worker_outbox")


async def test_records_leave_at_flush_and_are_acknowledged(settings: Settings) -> None:
    stats = WorkerStats()
    infra = Infra(asyncio.Event(), 0.5, LOG, stats)
    topic = settings.events_topic
    async with (
        kafka.started(kafka.rd_producer(settings)) as producer,
        TopicReader(settings, topic) as reader,
    ):
        outbox = Outbox(producer, infra, stats, LOG)
        for i in range(5):
            outbox.send((topic, b"k", f"v{i}".encode(), [("n", str(i).encode())]))
        assert outbox.unsent and stats.errors == 0  # nothing produced before the flush
        await outbox.flush()
        assert outbox.unsent == []
        seen = await reader.until(lambda seen: len(seen) >= 5)
    assert [r.value for r in seen] == [f"v{i}".encode() for i in range(5)]  # one key: in order
    assert [r.headers for r in seen] == [[("n", str(i).encode())] for i in range(5)]


async def test_a_record_refused_at_once_is_dropped_and_the_others_leave(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    stats = WorkerStats()
    infra = Infra(asyncio.Event(), 0.5, LOG, stats)
    topic = settings.dlq_topic
    # a producer that takes records up to 10 kB: a 20 kB one is refused by librdkafka at once
    small = kafka.rd_producer(settings, **{"message.max.bytes": 10_000})
    async with kafka.started(small) as producer, TopicReader(settings, topic) as reader:
        outbox = Outbox(producer, infra, stats, LOG)
        outbox.send((topic, b"k", b"before", []))
        outbox.send((topic, b"k", b"x" * 20_000, []))
        outbox.send((topic, b"k", b"after", []))
        await asyncio.wait_for(outbox.flush(), 60)  # not retried forever
        seen = await reader.until(lambda seen: len(seen) >= 2)
    assert [r.value for r in seen] == [b"before", b"after"]
    assert stats.errors == 1 and stats.infra_retries == 0
    assert any("dropping the record" in r.getMessage() for r in caplog.records)
