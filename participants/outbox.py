"""The replies and dead letters of one batch: produced without awaiting each send, then
acknowledged together before the batch's offsets may be committed."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from infra.retry import Backoff
from participants.errors import is_infrastructure
from participants.outcome import Headers
from participants.runtime import Infra, WorkerStats

Record = tuple[str, bytes | None, bytes | None, Headers]  # topic, key, value, headers

#: the pause before records Kafka did not acknowledge are sent again
RESEND = Backoff(initial_s=0.2, max_s=0.2)


class NotAcknowledgedError(Exception):
    """Kafka did not acknowledge some records of the batch; they are sent again."""


class Outbox:
    def __init__(
        self, producer: AIOKafkaProducer, infra: Infra, stats: WorkerStats, log: logging.Logger
    ) -> None:
        self.producer, self.infra, self.stats, self.log = producer, infra, stats, log
        self.sends: list[tuple[asyncio.Future[object], Record]] = []
        self.unacknowledged: list[Record] = []  # to send again on the next attempt of `flush`

    async def send(self, record: Record) -> None:
        """Hand a record to the producer (retried while Kafka is away); its ack is awaited in
        `flush`."""
        topic, key, value, headers = record

        async def enqueue() -> asyncio.Future[object]:
            fut: asyncio.Future[object] = await self.producer.send(
                topic, value=value, key=key, headers=headers
            )
            return fut

        self.sends.append((await self.infra.retry("produce", enqueue), record))

    async def flush(self) -> None:
        """Wait until Kafka acknowledged every record; re-send what failed (the copies carry the
        same message ids, so receivers dedupe them). Raises `Stopped` on a stop meanwhile."""
        await self.infra.retry(
            "flush",
            self._acknowledged,
            backoff=RESEND,
            retry_on=lambda exc: isinstance(exc, NotAcknowledgedError),
        )

    async def _acknowledged(self) -> None:
        for record in self.unacknowledged:
            await self.send(record)
        sends, self.sends, self.unacknowledged = self.sends, [], []
        results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
        for (_, record), res in zip(sends, results, strict=True):
            if not isinstance(res, BaseException):
                continue
            if is_infrastructure(res) or (isinstance(res, KafkaError) and res.retriable):
                self.unacknowledged.append(record)
            else:
                self.stats.errors += 1
                self.log.error("cannot produce to %s, dropping the record: %r", record[0], res)
        if self.unacknowledged:
            raise NotAcknowledgedError(f"{len(self.unacknowledged)} records not acknowledged")
