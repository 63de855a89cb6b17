"""The worker loop: connect, poll a batch, process it, commit, until stopped.

Staged shutdown: a stop (SIGTERM, SIGINT, or the caller's event) ends intake; the batch in
progress is finished, its replies acknowledged and its offsets committed; then the consumer
leaves the group, the producer flushes, and the Redis pool closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TypeVar

from infra import crashpoints
from infra import kafka as kafka_factory
from infra import redis as redis_factory
from infra.errors import is_commit_refused, is_kafka_error
from infra.rdkafka import Consumer, Producer, TopicPartition
from infra.retry import Backoff, Stopped, pause, retry
from participants.batch import Batch, BatchProcessor
from participants.config import WorkerOptions
from participants.keys import SdkKeys, group_id
from participants.participant import Participant
from participants.routing import command_topics
from participants.runtime import Infra, WorkerStats
from participants.store import Store
from schemas.config import Settings

__all__ = ["WorkerStats", "install_signal_handlers", "run", "run_many"]

T = TypeVar("T")

#: commit attempts before the batch is left to be re-delivered
COMMIT_ATTEMPTS = 5
#: how often a worker asks whether the topics it reads exist yet
TOPIC_WAIT_S = 0.5


class Worker:
    def __init__(
        self,
        settings: Settings,
        participant: Participant,
        options: WorkerOptions,
        stop: asyncio.Event,
        rng: random.Random | None = None,
    ) -> None:
        self.settings, self.participant, self.options, self.stop = (
            settings,
            participant,
            options,
            stop,
        )
        self.rng = rng or random.Random()
        self.stats = WorkerStats()
        self.log = logging.getLogger(f"participants.{participant.name}")
        self.infra = Infra(stop, options.max_backoff_s, self.log, self.stats)
        # Set while no batch is in progress; a rebalance waits for it (see _Rebalance).
        self.idle = asyncio.Event()
        self.idle.set()
        self.joined = False
        self.last_activity = time.monotonic()
        #: records fetched, by topic: what this worker's consumer read, skipped ones included
        self.fetched: Counter[str] = Counter()

    async def run(self) -> WorkerStats:
        crashpoints.check()  # a misspelt SAGA_CRASH_AT stops the worker before it reads
        redis = redis_factory.client(self.settings, decode=True)
        store = Store(
            redis,
            SdkKeys(self.settings.key_prefix, self.participant.name),
            self.options.reply_ttl_s,
            self.options.guard,
        )
        clients = await self._connect()
        try:
            if clients is not None:
                consumer, producer = clients
                processor = BatchProcessor(
                    self.settings,
                    self.participant,
                    self.options,
                    store,
                    producer,
                    self.infra,
                    self.stats,
                    self.rng,
                )
                await self._loop(consumer, processor)
        finally:
            if clients is not None:
                for client in clients:
                    with contextlib.suppress(Exception):
                        await client.stop()
            await redis.aclose()
        self.log.info("%s worker stopped: %s", self.participant.name, self.stats)
        return self.stats

    def _backoff(self, initial_s: float) -> Backoff:
        return Backoff(initial_s=initial_s, max_s=self.options.max_backoff_s)

    async def _while_kafka_is_away(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """`op` retried on Kafka errors until it succeeds; `Stopped` on a stop meanwhile."""
        return await retry(
            op,
            what=what,
            log=self.log,
            stop=self.stop,
            backoff=self._backoff(0.1),
            retry_on=is_kafka_error,
        )

    async def _connect(self) -> tuple[Consumer, Producer] | None:
        """Started clients, or None when stopped before Kafka answered."""
        if self.stop.is_set():
            return None
        try:
            return await self._while_kafka_is_away("connect to Kafka", self._start_clients)
        except Stopped:
            return None

    async def _start_clients(self) -> tuple[Consumer, Producer]:
        client_id = f"participant-{self.participant.name}"
        group = group_id(self.settings.key_prefix, self.participant.name)
        producer = kafka_factory.rd_producer(self.settings, **{"client.id": client_id})
        # static membership when SAGA_GROUP_INSTANCE_ID is set (rd_consumer): a restart resumes
        # at once; the batch size is `getmany`'s, librdkafka has no max.poll.records
        consumer = kafka_factory.rd_consumer(
            self.settings,
            group_id=group,
            **{"client.id": client_id, "auto.offset.reset": self.options.start_from},
        )
        try:
            await producer.start()
            await consumer.start()
            await self._wait_for_topics(consumer)
            consumer.subscribe(self._topics(), listener=_Rebalance(self))
        except BaseException:  # Kafka away, stopped while waiting for its topics, cancelled
            for client in (consumer, producer):
                with contextlib.suppress(Exception):
                    await client.stop()
            raise
        self.log.info(
            "%s worker consuming %s as group %s",
            self.participant.name,
            ", ".join(self._topics()),
            group,
        )
        return consumer, producer

    async def _wait_for_topics(self, consumer: Consumer) -> None:
        """Until every topic it reads exists (`Stopped` on a stop meanwhile). A subscription to
        a topic that does not exist yet only notices it at the next metadata refresh (30 s), so
        a worker started beside the orchestrator, which creates the participant topics at its
        start, would sit idle that long; asking twice a second costs one metadata request."""
        wanted = set(self._topics())
        told = False
        while missing := sorted(wanted - await consumer.topics()):
            if not told:
                self.log.warning(
                    "%s worker: waiting for %s (the orchestrator creates participant topics at "
                    "its start; or create them, see docs/OPERATIONS.md)",
                    *(self.participant.name, ", ".join(missing)),
                )
                told = True
            if await pause(self.stop, TOPIC_WAIT_S):
                raise Stopped()
        if told:
            self.log.info("%s worker: its topics exist now", self.participant.name)

    def _topics(self) -> list[str]:
        """Its commands topics (its own `<commands topic>.<name>` and any extra ones, or the
        one commands topic in single mode: `participants.routing.command_topics`), and the
        domain events topic of a participant that reacts to events (`Participant.on`); one
        that only reacts does not read commands."""
        p = self.participant
        commands = command_topics(self.settings, p.name) if p.takes_commands else []
        return commands + ([p.events_topic] if p.reactions else [])

    async def _loop(self, consumer: Consumer, processor: BatchProcessor) -> None:
        poll = partial(
            consumer.getmany,
            timeout_ms=self.options.poll_timeout_ms,
            max_records=self.options.max_batch,
        )
        while not self.stop.is_set():
            try:
                batch: Batch = await self._while_kafka_is_away("poll", poll)
            except Stopped:
                return
            if not any(batch.values()):
                if self._idle_long_enough():
                    self.log.info(
                        "%s worker idle for %ss: exiting",
                        self.participant.name,
                        self.options.idle_exit_s,
                    )
                    return
                continue
            self.last_activity = time.monotonic()
            for tp, records in batch.items():
                self.fetched[tp.topic] += len(records)
            self.idle.clear()
            try:
                if not await processor.process(batch):
                    self.log.warning("stopping with a batch unfinished: it will be re-delivered")
                    return
                await self._commit(consumer, batch)
            finally:
                self.idle.set()

    def _idle_long_enough(self) -> bool:
        limit = self.options.idle_exit_s
        return limit is not None and self.joined and time.monotonic() - self.last_activity >= limit

    async def _commit(self, consumer: Consumer, batch: Batch) -> None:
        """Commit the batch's offsets, retrying a few times (even while stopping: the batch is
        done, and committing it spares a re-delivery)."""
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        attempts = 0

        async def commit() -> None:
            nonlocal attempts
            attempts += 1
            await consumer.commit(offsets)

        def worth_retrying(exc: BaseException) -> bool:
            return is_kafka_error(exc) and not is_commit_refused(exc)

        try:
            await retry(
                commit,
                what="commit",
                log=self.log,
                backoff=self._backoff(0.2),
                retry_on=lambda exc: worth_retrying(exc) and attempts < COMMIT_ATTEMPTS,
            )
        except Exception as exc:
            if is_commit_refused(exc):
                # The partitions moved to another replica, which re-delivers from the last
                # commit: harmless, the stored outcomes answer those commands again.
                self.log.warning("commit refused after a rebalance (%s)", exc)
            elif is_kafka_error(exc):
                self.log.error(
                    "giving up committing %s (%s); the batch will be re-delivered", offsets, exc
                )
            else:
                raise
        else:
            self.stats.commits += 1


class _Rebalance:
    """Holds a rebalance until the batch in progress is committed, so the next owner of a
    partition does not run the same saga's commands at the same time as this replica.

    `infra.rdkafka.Consumer` calls these from librdkafka's rebalance callback, which runs only
    inside `getmany` (or `stop`) and blocks it until they return; while a batch runs, nothing
    polls, and the group waits for this member (up to max.poll.interval.ms). So a revoke finds
    the worker idle; the wait keeps that true for any consumer that calls a listener sooner."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        try:
            await asyncio.wait_for(self.worker.idle.wait(), self.worker.options.revoke_wait_s)
        except TimeoutError:
            self.worker.log.warning("rebalance proceeds while a batch is still in progress")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.worker.joined = True
        self.worker.last_activity = time.monotonic()
        self.worker.log.info(
            "assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        )


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (a second signal is ignored: shutdown is already under way)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


async def run(
    settings: Settings,
    participant: Participant,
    stop_event: asyncio.Event | None = None,
    options: WorkerOptions | None = None,
) -> WorkerStats:
    """Run one worker until `stop_event` is set (or SIGTERM/SIGINT when no event is given, or
    `options.idle_exit_s` passes without a record)."""
    stop = stop_event
    if stop is None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
    return await Worker(settings, participant, options or WorkerOptions(), stop).run()


async def run_many(
    settings: Settings,
    participants: Iterable[Participant],
    stop_event: asyncio.Event | None = None,
    options: WorkerOptions | None = None,
) -> list[WorkerStats]:
    """Run several participants in one process (each its own consumer group), e.g. `run all`."""
    stop = stop_event
    if stop is None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(run(settings, p, stop, options)) for p in participants]
    return [t.result() for t in tasks]
