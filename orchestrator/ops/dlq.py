"""The dead-letter topic: read it, look at one record, and replay records where they came from.

Reading uses a consumer without a group (partitions assigned by hand, read from the beginning
to the end offsets taken at the start), so inspecting the topic leaves no committed state.

A replay re-produces the original key, value and headers (less the dead-letter reason headers)
to the original topic, with `dlq-replayed: <dlq partition>:<offset>`. When the value carries no
messageId, the header `saga-message-id` is set to the record's original position
`topic:partition:offset`; the orchestrator deduplicates inputs by that id, so a replay run twice
applies once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra import kafka as kafka_factory
from orchestrator.ops import InputError, NotFoundError, RefusedError
from schemas import codec
from schemas.config import Settings
from schemas.dlq import (
    H_ERROR_CLASS,
    H_ERROR_MESSAGE,
    H_OFFSET,
    H_PARTITION,
    H_REPLAYED,
    H_SOURCE,
    H_TIME,
    H_TOPIC,
    H_TRUNCATED,
    Headers,
    header,
)
from schemas.headers import H_MESSAGE_ID, H_SAGA_ID

PREVIEW = 200


@dataclass
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def h(self, name: str) -> str:
        return header(self.headers, name) or ""

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def original_position(self) -> str:
        return f"{self.h(H_TOPIC)}:{self.h(H_PARTITION)}:{self.h(H_OFFSET)}"

    @property
    def saga_id(self) -> str:
        return self.h(H_SAGA_ID) or (self.key or b"").decode(errors="replace")

    @property
    def time_ms(self) -> int:
        try:
            return int(datetime.fromisoformat(self.h(H_TIME)).timestamp() * 1000)
        except ValueError:
            return self.timestamp_ms

    def to_json(self, full: bool = False) -> dict[str, Any]:
        value = (self.value or b"").decode(errors="replace")
        doc: dict[str, Any] = {
            "position": self.position,
            "sagaId": self.saga_id,
            "originalTopic": self.h(H_TOPIC),
            "originalPartition": self.h(H_PARTITION),
            "originalOffset": self.h(H_OFFSET),
            "errorClass": self.h(H_ERROR_CLASS),
            "errorMessage": self.h(H_ERROR_MESSAGE),
            "time": self.h(H_TIME),
            "source": self.h(H_SOURCE),
            "replayedFrom": self.h(H_REPLAYED),
            "valueBytes": len(self.value or b""),
        }
        if full:
            doc["key"] = (self.key or b"").decode(errors="replace")
            doc["value"] = value
            doc["headers"] = {k: (v or b"").decode(errors="replace") for k, v in self.headers}
        else:
            doc["valuePreview"] = value[:PREVIEW]
        return doc


@dataclass(frozen=True)
class Filter:
    reason: str | None = None
    since_ms: int | None = None
    saga: str | None = None

    @property
    def empty(self) -> bool:
        return self.reason is None and self.since_ms is None and self.saga is None

    def matches(self, d: DeadLetter) -> bool:
        if self.reason is not None:
            needle = self.reason.lower()
            if (
                needle not in d.h(H_ERROR_CLASS).lower()
                and needle not in d.h(H_ERROR_MESSAGE).lower()
            ):
                return False
        if self.since_ms is not None and d.time_ms < self.since_ms:
            return False
        return self.saga is None or d.saga_id == self.saga


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return kafka_factory.consumer(
        settings,
        group_id=None,
        max_partition_fetch_bytes=20 * 1_048_576,
        fetch_max_bytes=50 * 1_048_576,
        request_timeout_ms=int(settings.connect_timeout_s * 1000) + 30_000,
    )


async def _partitions(c: AIOKafkaConsumer, topic: str, timeout_s: float) -> list[TopicPartition]:
    """Every partition of the topic, assigned to this group-less consumer."""
    if topic not in await c.topics():  # checked first: subscribing could auto-create it
        raise NotFoundError(f"dead-letter topic {topic!r} does not exist")
    c.subscribe([topic])  # without a group: all partitions, assigned once metadata arrives
    deadline = time.monotonic() + timeout_s
    while not c.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no partition metadata for {topic!r}")
        await asyncio.sleep(0.01)  # polling the client's metadata, with a deadline
    return sorted(c.assignment())


def _letter(r: Any) -> DeadLetter:
    return DeadLetter(r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers or []))


async def read(
    settings: Settings, flt: Filter | None = None, timeout_s: float = 60
) -> list[DeadLetter]:
    """Every record of the dead-letter topic up to its current end, oldest first per partition."""
    c = _consumer(settings)
    await c.start()
    try:
        tps = await _partitions(c, settings.dlq_topic, timeout_s)
        end = await c.end_offsets(tps)
        await c.seek_to_beginning(*tps)
        out: list[DeadLetter] = []
        todo = {tp for tp in tps if end[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while todo:
            for tp in list(todo):
                if await c.position(tp) >= end[tp]:
                    todo.discard(tp)
            if not todo:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("reading the dead-letter topic took too long")
            batch = await c.getmany(*todo, timeout_ms=500)
            for tp, rs in batch.items():
                out += [_letter(r) for r in rs if r.offset < end[tp]]
        return [d for d in out if flt is None or flt.matches(d)]
    finally:
        await c.stop()


async def get(settings: Settings, partition: int, offset: int, timeout_s: float = 30) -> DeadLetter:
    """One record by its position in the dead-letter topic."""
    c = _consumer(settings)
    await c.start()
    try:
        tps = await _partitions(c, settings.dlq_topic, timeout_s)
        tp = TopicPartition(settings.dlq_topic, partition)
        if tp not in tps:
            raise NotFoundError(f"the dead-letter topic has no partition {partition}")
        begin = (await c.beginning_offsets([tp]))[tp]
        end = (await c.end_offsets([tp]))[tp]
        if not begin <= offset < end:
            raise NotFoundError(
                f"no dead letter at {partition}:{offset} "
                f"(partition {partition} holds offsets {begin}..{end - 1})"
            )
        c.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await c.getmany(tp, timeout_ms=500, max_records=1)
            for r in batch.get(tp, []):
                if r.offset == offset:
                    return _letter(r)
                if r.offset > offset:  # compacted or transaction marker
                    break
        raise NotFoundError(f"no dead letter at {partition}:{offset}")
    finally:
        await c.stop()


def replay_headers(d: DeadLetter, value: bytes | None) -> Headers:
    """The original headers without the dead-letter ones, plus the replay mark and, when the
    value names no messageId, the original position as the id the orchestrator dedupes on."""
    kept = [(k, v) for k, v in d.headers if not k.startswith("dlq-")]
    kept.append((H_REPLAYED, d.position.encode()))
    if not _has_message_id(value) and header(kept, H_MESSAGE_ID) is None:
        kept.append((H_MESSAGE_ID, d.original_position.encode()))
    return kept


def _has_message_id(value: bytes | None) -> bool:
    try:
        msg = codec.decode(value, 100_000_000)
    except (codec.DecodeError, ValueError):
        return False
    return "message_id" in msg.model_fields_set


@dataclass
class Replayed:
    letter: DeadLetter
    topic: str
    headers: Headers
    value: bytes | None
    sent: bool
    #: "topic:partition:offset" the replayed record got
    sent_to: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.letter.position,
            "sagaId": self.letter.saga_id,
            "topic": self.topic,
            "messageId": header(self.headers, H_MESSAGE_ID),
            "sent": self.sent,
            "sentTo": self.sent_to,
        }


def plan(letters: list[DeadLetter], value: bytes | None = None) -> list[Replayed]:
    """What a replay would send, checked: every record must name its original topic, and a
    truncated value can only be replayed with a replacement."""
    if value is not None and len(letters) != 1:
        raise InputError("--value-file replaces the value of exactly one record: name its position")
    out = []
    for d in letters:
        topic = d.h(H_TOPIC)
        if not topic:
            raise RefusedError(f"dead letter {d.position} does not name its original topic")
        if value is None and d.h(H_TRUNCATED):
            raise RefusedError(
                f"dead letter {d.position} kept only the head of a {d.h(H_TRUNCATED)}-byte value; "
                "replay it with --value-file"
            )
        v = d.value if value is None else value
        out.append(Replayed(d, topic, replay_headers(d, v), v, False))
    return out


async def send(
    producer: AIOKafkaProducer,
    planned: list[Replayed],
    rate: float | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Produce the planned records, at most `rate` per second when given."""
    interval = 1 / rate if rate else 0.0
    started = time.monotonic()
    for i, r in enumerate(planned):
        if interval:
            ahead = started + i * interval - time.monotonic()
            if ahead > 0:
                await sleep(ahead)  # pacing the replay, not waiting for a condition
        meta = await producer.send_and_wait(r.topic, r.value, r.letter.key, headers=r.headers)
        r.sent = True
        r.sent_to = f"{meta.topic}:{meta.partition}:{meta.offset}"
