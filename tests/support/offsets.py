"""A consumer group's committed offsets against the topics' end offsets, read from the broker:
the proof that a daemon finished (and committed) everything it was given."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import TopicPartition as TP

from infra import kafka
from schemas.config import Settings

Offsets = dict[tuple[str, int], int]


async def _partitions(settings: Settings, topics: Sequence[str]) -> list[TP]:
    """Every partition of `topics`, from the broker's metadata."""

    def read() -> list[TP]:
        meta = kafka.admin(settings).list_topics(timeout=30).topics
        tps = []
        for topic in topics:
            parts = meta[topic].partitions if topic in meta else {}
            assert parts, f"topic {topic} has no partitions"
            tps += [TP(topic, p) for p in sorted(parts)]
        return tps

    return await asyncio.to_thread(read)


async def end_offsets(settings: Settings, topics: Sequence[str]) -> Offsets:
    """The end offset (high watermark) of every partition of `topics`."""
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        tps = await _partitions(settings, topics)
        ends = await consumer.end_offsets(tps)
    return {(tp.topic, tp.partition): ends[tp] for tp in tps}


async def committed_and_ends(
    settings: Settings, group: str, topics: Sequence[str]
) -> tuple[Offsets, Offsets]:
    """(committed offset of `group`, end offset) per partition of `topics`; a partition the
    group never committed reads -1. The reading consumer never joins the group."""
    consumer = kafka.consumer(settings, group_id=group)
    async with kafka.started(consumer):
        tps = await _partitions(settings, topics)
        ends = await consumer.end_offsets(tps)
        committed = {}
        for tp in tps:
            offset = await consumer.committed(tp)
            committed[(tp.topic, tp.partition)] = -1 if offset is None else offset
    return committed, {(tp.topic, tp.partition): ends[tp] for tp in tps}


async def wait_committed_to_end(
    settings: Settings, group: str, topics: Sequence[str], timeout_s: float
) -> Offsets:
    """Wait until `group` has committed every partition of `topics` up to its end offset
    (a partition with no records counts once nothing is to commit); the end offsets. On the
    deadline, an AssertionError lists the partitions behind."""
    deadline = time.monotonic() + timeout_s
    while True:
        committed, ends = await committed_and_ends(settings, group, topics)
        behind = {
            tp: (committed[tp], end) for tp, end in ends.items() if end and committed[tp] < end
        }
        if not behind:
            return ends
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {timeout_s}s group {group} is behind (committed, end): {behind}"
            )
        await asyncio.sleep(0.2)
