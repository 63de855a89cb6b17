"""A tap on the saga topics: it reads the participant commands (`tests/support/commands.py`:
the commands topic, or each participant's own in per-participant mode) and the events topic
from the start (in no consumer group), keeps the first record of every participant command and
reply by message id, and re-produces exact copies (same key, value and headers, so the same
message id) of them, as a flaky network, a relay or a retrying producer would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from aiokafka import AIOKafkaProducer, ConsumerRecord

from infra import kafka
from schemas import codec
from schemas.config import Settings
from schemas.dlq import header
from schemas.headers import H_MESSAGE_ID, H_MESSAGE_TYPE
from schemas.messages import Envelope
from tests.support import commands

REPLY_TYPES = ("StepCompleted", "StepFailed", "StepCompensated")


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    message_id: str
    saga_id: str
    message_type: str
    #: the decoded message (a SagaCommand or a reply)
    message: Envelope


class Tap:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        #: participant commands (SagaCommand) and replies, first copy of each id, in log order
        self.commands: dict[str, Record] = {}
        self.replies: dict[str, Record] = {}
        #: re-produce one copy of each command and reply the moment it is first seen
        self.echo = False
        self.copied_commands = 0
        self.copied_replies = 0
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._busy = asyncio.Lock()  # held while a batch is read and echoed

    async def __aenter__(self) -> Tap:
        self._producer = kafka.producer(self.s)
        await self._producer.start()
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._producer is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._producer.stop()

    async def stop_echo(self) -> None:
        """Stop echoing; once this returns, the copy counters are final."""
        self.echo = False
        async with self._busy:
            pass

    async def copy(self, records: Iterable[Record]) -> int:
        """Produce a copy of each record to its topic; how many."""
        assert self._producer is not None
        futures = [
            await self._producer.send(r.topic, r.value, r.key, headers=list(r.headers))
            for r in records
        ]
        await asyncio.gather(*futures)
        return len(futures)

    async def _run(self) -> None:
        async with commands.reading(self.s, self.s.events_topic) as consumer:
            self._ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                async with self._busy:
                    await self._take(r for rs in batch.values() for r in rs)

    async def _take(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        fresh: list[Record] = []
        for r in records:
            rec = _record(r.topic, r.key, r.value, list(r.headers or ()))
            if rec is None:
                continue
            seen = self.commands if rec.message_type == "SagaCommand" else self.replies
            if rec.message_id not in seen:
                seen[rec.message_id] = rec
                fresh.append(rec)
        if self.echo and fresh:
            await self.copy(fresh)
            n = sum(1 for r in fresh if r.message_type == "SagaCommand")
            self.copied_commands += n
            self.copied_replies += len(fresh) - n


def reidentified(rec: Record, suffix: str = ":again") -> Record:
    """The same message under a new message id (value and header), as a sender that does not
    keep its ids stable would send it again."""
    mid = f"{rec.message_id}{suffix}"
    value = codec.encode(rec.message.model_copy(update={"message_id": mid}))
    headers = [(k, mid.encode() if k == H_MESSAGE_ID else v) for k, v in rec.headers]
    return replace(rec, value=value, headers=headers, message_id=mid)


def _record(
    topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> Record | None:
    mtype = header(headers, H_MESSAGE_TYPE) or ""
    if mtype != "SagaCommand" and mtype not in REPLY_TYPES:
        return None
    if value is None:
        return None
    msg = codec.decode(value)
    return Record(topic, key, value, headers, msg.message_id, msg.saga_id, mtype, msg)
