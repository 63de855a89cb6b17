"""Publishing a batch's commands and dead letters, record by record.

Kafka answers each record on its own, so each record's outcome is handled on its own:
- acked: done; a retry of the batch does not send it again, and its outbox entry is deleted;
- refused for good (`infra.errors.is_record_error`: too large for the topic, a format the topic
  refuses): a command is dropped from the outbox and the INPUT that caused it is dead-lettered
  with the reason (the saga itself moves on through its step timeout, see ARCHITECTURE.md);
- anything else (broker away, leader moving, a topic not yet authorised): raised, so the
  caller retries the batch with backoff and only what was not acked is sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.errors import error_name, is_record_error, is_too_large
from infra.rdkafka import Producer
from orchestrator.config import OrchestratorSettings
from orchestrator.engine import topics
from orchestrator.engine.store import OutboxEntry, RedisStore, Write
from orchestrator.telemetry.metrics import Metrics
from schemas.dlq import H_TRUNCATED, Headers, SourceRecord, dead_letter_headers, headers_for
from schemas.headers import H_MESSAGE_ID

log = logging.getLogger("orchestrator")
#: the head of a value kept when the dead-letter topic refuses the whole of it
TRUNCATED_BYTES = 65536

Record = tuple[bytes | None, bytes | None, Headers]


@dataclass
class Poison:
    """An input that can never be processed, and why; it goes to the dead-letter topic."""

    record: SourceRecord
    error_class: str
    reason: str


@dataclass
class _Command:
    record: SourceRecord  # the input whose step wrote it
    entry: OutboxEntry
    outbox_id: bytes
    saga_id: str  # whose shard's outbox holds it
    done: bool = False


@dataclass
class Outgoing:
    """One batch's commands and dead letters, and how far Kafka has taken them."""

    commands: list[_Command] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)  # indexes of poison acked by the DLQ topic
    #: (saga id, outbox id) of the entries no longer needed
    to_delete: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def of(cls, writes: list[tuple[SourceRecord, Write]], poison: list[Poison]) -> Outgoing:
        out = cls(poison=list(poison))
        for record, w in writes:
            for entry, oid in zip(w.outbox, w.outbox_ids, strict=False):
                out.commands.append(_Command(record, entry, oid, w.saga_id))
        return out


async def send_each(
    producer: Producer, topic: str | Callable[[Headers], str], records: Sequence[Record]
) -> list[Exception | None]:
    """Send every record without waiting for each ack, then wait for all; per record, None
    when Kafka acked it, else the error (raised by `send` or by its delivery). `topic` is one
    topic, or a function of a record's headers (commands: `Publisher.command_topic`)."""
    outcomes: list[Exception | None] = [None] * len(records)
    waiting: list[tuple[int, Any]] = []
    for i, (key, value, headers) in enumerate(records):
        to = topic if isinstance(topic, str) else topic(headers)
        try:
            waiting.append((i, await producer.send(to, value, key, headers=headers)))
        except Exception as exc:  # refused before it left: too large, buffer full, closed
            outcomes[i] = exc
    acks = await asyncio.gather(*(f for _, f in waiting), return_exceptions=True)
    for (i, _), ack in zip(waiting, acks, strict=True):
        if isinstance(ack, Exception):
            outcomes[i] = ack
        elif isinstance(ack, BaseException):
            raise ack
    return outcomes


class Publisher:
    def __init__(
        self,
        settings: OrchestratorSettings,
        producer: Producer,
        store: RedisStore,
        metrics: Metrics,
    ) -> None:
        self.s = settings
        self.producer = producer
        self.store = store
        self.metrics = metrics

    async def publish(self, out: Outgoing) -> None:
        """Send what Kafka has not acked yet: the commands, then the dead letters; then delete
        the commands that are done with from the outbox. Raises the first error that is not a
        record's own (the caller retries; acked records are not sent again)."""
        pending = [c for c in out.commands if not c.done]
        outcomes = await send_each(
            self.producer,
            self.command_topic,
            [(c.entry.key, c.entry.value, c.entry.headers) for c in pending],
        )
        retry: Exception | None = None
        refused = {_position(p.record) for p in out.poison}
        for c, exc in zip(pending, outcomes, strict=True):
            if exc is None:
                c.done = True
                out.to_delete.append((c.saga_id, c.outbox_id))
                self.metrics.commands_sent += 1
            elif is_record_error(exc):
                c.done = True
                out.to_delete.append((c.saga_id, c.outbox_id))
                if _position(c.record) not in refused:  # one dead letter per input
                    refused.add(_position(c.record))
                    reason = self._refusal(c.entry, exc)
                    out.poison.append(Poison(c.record, error_name(exc), reason))
            else:
                retry = retry or exc
        retry = await self._dead_letters(out) or retry
        if out.to_delete:
            await self.store.outbox_delete_written(out.to_delete)
            out.to_delete = []
        if retry is not None:
            raise retry

    def command_topic(self, headers: Headers) -> str:
        """Where a command goes: its participant's topic or its step's own, or the one
        commands topic (`orchestrator.engine.topics`); the relay re-publishes with it too."""
        return topics.of_headers(self.s, headers)

    def _refusal(self, entry: OutboxEntry, exc: Exception) -> str:
        cid = next((v.decode() for k, v in entry.headers if k == H_MESSAGE_ID), "?")
        reason = (
            f"its command {cid} ({len(entry.value)} bytes) can never be published to "
            f"{self.command_topic(entry.headers)}: {exc}; the saga's "
            "step times out"
        )
        log.error("command refused by Kafka for good: %s", reason)
        return reason

    async def _dead_letters(self, out: Outgoing) -> Exception | None:
        """Dead-letter the batch's poison not yet acked; the first error that is not the
        dead-letter topic refusing a value's size is returned for the caller to retry."""
        todo = [i for i in range(len(out.poison)) if i not in out.dead]
        records: list[Record] = []
        for i in todo:
            p, r = out.poison[i], out.poison[i].record
            records.append(
                (r.key, r.value, headers_for(r, p.error_class, p.reason, "orchestrator"))
            )
        retry: Exception | None = None
        outcomes = await send_each(self.producer, self.s.dlq_topic, records)
        for i, (key, value, headers), exc in zip(todo, records, outcomes, strict=True):
            if exc is not None and is_too_large(exc) and value is not None:
                await self._dead_letter_head(key, value, headers)
            elif exc is not None:
                retry = retry or exc
                continue
            out.dead.add(i)
            self.metrics.dead_lettered += 1
            p, r = out.poison[i], out.poison[i].record
            log.warning(
                "dead-lettered %s:%s@%s: %s: %s",
                *(r.topic, r.partition, r.offset, p.error_class, p.reason),
            )
        return retry

    async def dead_letter_entry(self, entry: OutboxEntry, exc: Exception, source: str) -> None:
        """Dead-letter a command itself (an outbox entry no input is known for any more)."""
        reason = self._refusal(entry, exc)
        headers = dead_letter_headers(
            entry.headers,
            topic=self.command_topic(entry.headers),
            partition=-1,
            offset=-1,
            error_class=error_name(exc),
            error_message=reason,
            source=source,
        )
        await self.dead_letter(entry.key, entry.value, headers)
        self.metrics.dead_lettered += 1

    async def dead_letter(self, key: bytes | None, value: bytes, headers: Headers) -> None:
        """Send to the dead-letter topic and wait for the ack. When the topic takes less than
        the value, keep its head and say so rather than block the partition."""
        try:
            await (await self.producer.send(self.s.dlq_topic, value, key, headers=headers))
        except Exception as exc:
            if not is_too_large(exc):
                raise
            await self._dead_letter_head(key, value, headers)

    async def _dead_letter_head(self, key: bytes | None, value: bytes, headers: Headers) -> None:
        headers = [*headers, (H_TRUNCATED, str(len(value)).encode())]
        head = value[:TRUNCATED_BYTES]
        await (await self.producer.send(self.s.dlq_topic, head, key, headers=headers))


def _position(r: SourceRecord) -> tuple[str, int, int]:
    return r.topic, r.partition, r.offset
