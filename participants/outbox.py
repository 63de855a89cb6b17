"""The replies and dead letters of one batch: collected while the batch runs, produced together
when it ends, then acknowledged together before the batch's offsets may be committed.

Why together at the end rather than each as it is made: librdkafka sends a record the moment it
is queued when linger.ms is 0 (the default, for the daemon's latency), so replies made one by
one as sagas finish left in one produce request each, and the producer's broker thread cost
more CPU than the rest of the Kafka work (measured with `scripts/worker_cpu.py`). Queued in one
go, they leave in a few requests, without a linger: a batch of one command is not delayed."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from infra.errors import is_transient
from infra.rdkafka import Producer, RecordMetadata
from infra.retry import Backoff, Stopped
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
        self, producer: Producer, infra: Infra, stats: WorkerStats, log: logging.Logger
    ) -> None:
        self.producer, self.infra, self.stats, self.log = producer, infra, stats, log
        #: to produce on the next attempt of `flush`: new records, and those not acknowledged
        self.unsent: list[Record] = []

    def send(self, record: Record) -> None:
        """Add a record to the batch's outbox; `flush` produces it."""
        self.unsent.append(record)

    async def flush(self) -> None:
        """Produce the records and wait until Kafka acknowledged every one; re-send what failed
        (the copies carry the same message ids, so receivers dedupe them). Raises `Stopped` on
        a stop meanwhile."""
        await self.infra.retry(
            "flush",
            self._acknowledged,
            backoff=RESEND,
            retry_on=lambda exc: isinstance(exc, NotAcknowledgedError),
        )

    async def _acknowledged(self) -> None:
        sends: list[tuple[asyncio.Future[RecordMetadata], Record]] = []
        for record in self.unsent:
            try:  # retried while Kafka is away
                sends.append(
                    (await self.infra.retry("produce", partial(self._produce, record)), record)
                )
            except Stopped:
                raise
            except Exception as exc:  # refused at once (too large for the producer)
                self._drop(record, exc)
        results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
        self.unsent = []
        for (_, record), res in zip(sends, results, strict=True):
            if not isinstance(res, BaseException):
                continue
            # an outage, a leader change, a delivery timeout: the same record may pass later
            if is_infrastructure(res) or is_transient(res):
                self.unsent.append(record)
            else:
                self._drop(record, res)
        if self.unsent:
            raise NotAcknowledgedError(f"{len(self.unsent)} records not acknowledged")

    async def _produce(self, record: Record) -> asyncio.Future[RecordMetadata]:
        topic, key, value, headers = record
        return await self.producer.send(topic, value=value, key=key, headers=headers)

    def _drop(self, record: Record, exc: BaseException) -> None:
        """A record no retry can get into Kafka: logged and counted, the batch goes on."""
        self.stats.errors += 1
        self.log.error("cannot produce to %s, dropping the record: %r", record[0], exc)
