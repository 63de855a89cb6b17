"""Small helpers for tests that talk to the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from infra import kafka
from schemas.config import Settings


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll a condition until it holds or the deadline passes (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def produce(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]], headers: Any = None
) -> None:
    # not idempotent: a test may send records bigger than the topic takes, to see them refused
    producer = kafka.producer(settings, enable_idempotence=False, max_request_size=20_000_000)
    async with kafka.started(producer):
        futures = [
            await producer.send(topic, value, key, headers=headers) for key, value in records
        ]
        await asyncio.gather(*futures)


async def read_all(settings: Settings, topic: str, expect: int, timeout_s: float = 30) -> list[Any]:
    """Read a topic from the beginning until `expect` records arrived (or the deadline)."""
    consumer = kafka.consumer(
        settings,
        topic,
        group_id=None,
        max_partition_fetch_bytes=20_000_000,
        fetch_max_bytes=50_000_000,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    async with kafka.started(consumer):
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                out.extend(rs)
    return out
