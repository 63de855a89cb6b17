"""One batch of records: route, look up, run handlers (different sagas concurrently, one saga in
order), store outcomes, publish replies and dead letters, wait for Kafka's acks.

Returns True when every record is settled and the batch's offsets may be committed; False when a
stop was requested while Redis or Kafka was unreachable (nothing is committed; the records come
back on the next start, and the stored outcomes make that harmless).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from participants import faults
from participants.config import WorkerOptions
from participants.context import Context, command_logger
from participants.errors import INFRA_ERRORS, classify
from participants.outcome import Headers, Outcome, check_result, reply_record
from participants.participant import Participant, Registration
from participants.routing import DeadLetter, Deliver, route
from participants.store import Known, Store
from schemas.config import Settings
from schemas.dlq import dead_letter_headers
from schemas.messages import SagaCommand

T = TypeVar("T")
Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
Record = tuple[str, bytes | None, bytes | None, Headers]


class Abandon(Exception):
    """A stop was requested while an infrastructure error was being retried."""


@dataclass
class WorkerStats:
    batches: int = 0
    handled: int = 0  # handlers run (or failures injected) for new commands
    replayed: int = 0  # answered from a stored outcome: duplicate, repeat, or refusal
    replies: int = 0
    swallowed: int = 0  # no-reply injections
    dead_lettered: int = 0
    skipped: int = 0
    errors: int = 0  # SDK-level failures (a bug); the command got no reply
    commits: int = 0
    infra_retries: int = 0  # waits for Redis or Kafka to come back
    outcomes: dict[str, int] = field(default_factory=dict)


class Infra:
    """Retry an operation while Redis or Kafka is unreachable, with capped exponential backoff."""

    def __init__(
        self, stop: asyncio.Event, max_backoff_s: float, log: logging.Logger, stats: WorkerStats
    ) -> None:
        self.stop, self.max_backoff_s, self.log, self.stats = stop, max_backoff_s, log, stats

    async def pause(self, delay_s: float) -> bool:
        """Sleep unless stopped first; True when a stop was requested."""
        try:
            await asyncio.wait_for(self.stop.wait(), delay_s)
        except TimeoutError:
            return False
        return True

    async def retry(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        delay = 0.05
        while True:
            try:
                return await fn()
            except INFRA_ERRORS as exc:
                self.stats.infra_retries += 1
                if self.stop.is_set():
                    raise Abandon(what) from exc
                self.log.warning(
                    "%s: infrastructure unavailable (%r); retrying in %.2fs", what, exc, delay
                )
                if await self.pause(delay):
                    raise Abandon(what) from exc
                delay = min(delay * 2, self.max_backoff_s)


class BatchProcessor:
    def __init__(
        self,
        settings: Settings,
        participant: Participant,
        options: WorkerOptions,
        store: Store,
        producer: AIOKafkaProducer,
        infra: Infra,
        stats: WorkerStats,
        rng: random.Random,
    ) -> None:
        self.settings, self.participant, self.options = settings, participant, options
        self.store, self.producer, self.infra, self.stats, self.rng = (
            store,
            producer,
            infra,
            stats,
            rng,
        )
        self.log = logging.getLogger(f"participants.{participant.name}")
        self.source = f"participant:{participant.name}"

    async def process(self, batch: Batch) -> bool:
        self.stats.batches += 1
        sends: list[tuple[asyncio.Future[object], Record]] = []
        commands: list[SagaCommand] = []
        for records in batch.values():
            for rec in records:
                r = route(
                    rec.value,
                    list(rec.headers or ()),
                    self.participant.name,
                    self.settings.max_message_bytes,
                )
                if isinstance(r, Deliver):
                    commands.append(r.command)
                elif isinstance(r, DeadLetter):
                    await self._dead_letter(rec, r, sends)
                else:
                    self.stats.skipped += 1
        abandoned = False
        try:
            if commands:
                await self._handle_all(commands, sends)
            await self._flush(sends)
        except* Abandon:
            abandoned = True
        return not abandoned

    async def _handle_all(
        self, commands: list[SagaCommand], sends: list[tuple[asyncio.Future[object], Record]]
    ) -> None:
        known, fault_conf = await self.infra.retry(
            "look up commands", partial(self.store.lookup, commands)
        )
        by_saga: dict[str, list[int]] = {}
        for i, cmd in enumerate(commands):
            by_saga.setdefault(cmd.saga_id, []).append(i)
        limit = asyncio.Semaphore(self.options.concurrency)

        async def saga_in_order(indexes: list[int]) -> None:
            # What earlier commands of this saga settled in this batch, which `known` (read
            # before the batch ran) cannot show: a repeat, a done step, a tombstone.
            seen: dict[str, Outcome] = {}
            done: set[tuple[str, bool]] = set()  # (step, compensation) that succeeded
            tombstoned: set[str] = set()  # steps whose compensation ran
            async with limit:
                for i in indexes:
                    cmd = commands[i]
                    k = known[i]
                    if cmd.message_id in seen:
                        k = Known(seen[cmd.message_id], True, False)
                    elif (cmd.step, cmd.compensation) in done:
                        k = Known(None, True, False)
                    elif not cmd.compensation and cmd.step in tombstoned:
                        k = Known(None, False, True)
                    outcome = await self._one(cmd, k, fault_conf)
                    if outcome is None:
                        continue
                    seen[cmd.message_id] = outcome
                    if outcome.kind != "failed":
                        done.add((cmd.step, cmd.compensation))
                    if cmd.compensation:
                        tombstoned.add(cmd.step)
                    try:
                        await self._reply(cmd, outcome, sends)
                    except Abandon:
                        raise
                    except Exception:
                        self.stats.errors += 1
                        self.log.exception("cannot build the reply to %s", cmd.message_id)

        async with asyncio.TaskGroup() as tg:
            for indexes in by_saga.values():
                tg.create_task(saga_in_order(indexes))

    async def _one(
        self, cmd: SagaCommand, known: Known, fault_conf: dict[str, str]
    ) -> Outcome | None:
        """The outcome to reply with, or None to send no reply."""
        log = command_logger(self.log, cmd)
        try:
            if known.outcome is not None:
                self.stats.replayed += 1
                log.info(
                    "%s seen before: re-sending its stored %s reply",
                    cmd.message_id,
                    known.outcome.kind,
                )
                return known.outcome
            if known.settled:
                self.stats.replayed += 1
                outcome = await self.infra.retry("settle", partial(self.store.settle, cmd))
                log.info(
                    "%s answered without running: %s %s",
                    cmd.message_id,
                    outcome.kind,
                    outcome.reason,
                )
                return outcome
            reg = self.participant.handlers.get(cmd.command_type)
            if reg is None or reg.compensation != cmd.compensation:
                what = "compensation" if cmd.compensation else "action"
                reason = f"{self.participant.name} has no {what} handler for {cmd.command_type}"
                log.warning("%s", reason)
                return await self.infra.retry(
                    "store", partial(self.store.commit_failure, cmd, False, reason)
                )
            injection = await self.infra.retry(
                "faults", partial(faults.pick, fault_conf, cmd, self.store, self.rng)
            )
            if injection.latency_s:
                await asyncio.sleep(injection.latency_s)  # the injected latency itself
            self.stats.handled += 1
            if injection.no_reply and not injection.run_anyway:
                self.stats.swallowed += 1
                log.warning("%s swallowed (injected no-reply)", cmd.message_id)
                return None
            if injection.fail is not None:
                outcome = await self.infra.retry(
                    "store", partial(self.store.commit_failure, cmd, *injection.fail)
                )
            else:
                outcome = await self.infra.retry(
                    "handle", partial(self._run_handler, reg, cmd, log)
                )
            self.stats.outcomes[outcome.kind] = self.stats.outcomes.get(outcome.kind, 0) + 1
            if outcome.kind == "failed":
                log.warning(
                    "%s %s failed (retryable=%s): %s",
                    cmd.command_type,
                    cmd.message_id,
                    outcome.retryable,
                    outcome.reason,
                )
            else:
                log.debug(
                    "%s %s %s %s", cmd.command_type, cmd.message_id, outcome.kind, outcome.result
                )
            if injection.no_reply:
                self.stats.swallowed += 1
                log.warning("%s handled, reply dropped (injected no-reply)", cmd.message_id)
                return None
            return outcome
        except Abandon:
            raise
        except Exception:
            # A bug in the SDK or a broken script: never take the worker down for one command.
            # It gets no reply; the orchestrator's timeout retries it.
            self.stats.errors += 1
            log.exception("%s could not be processed", cmd.message_id)
            return None

    async def _run_handler(
        self, reg: Registration, cmd: SagaCommand, log: logging.LoggerAdapter[Any]
    ) -> Outcome:
        ctx = Context(
            participant=self.participant.name,
            settings=self.settings,
            redis=self.store.redis,
            log=log,
            run_guarded=partial(self.store.guarded, cmd),
        )
        try:
            result = check_result(await reg.handler(cmd, ctx))
            if ctx.committed is None:
                return await self.store.commit(cmd, result, ctx.tx)
        except INFRA_ERRORS:
            raise
        except Exception as exc:
            if ctx.committed is None:
                retryable, reason = classify(exc)
                return await self.store.commit_failure(cmd, retryable, reason)
        assert ctx.committed is not None
        return ctx.committed

    async def _reply(
        self, cmd: SagaCommand, outcome: Outcome, sends: list[tuple[asyncio.Future[object], Record]]
    ) -> None:
        key, value, headers = reply_record(
            cmd, outcome, self.participant.name, self.settings.output_format
        )
        await self._send((self.settings.events_topic, key, value, headers), sends)
        self.stats.replies += 1

    async def _dead_letter(
        self,
        rec: ConsumerRecord[bytes, bytes],
        why: DeadLetter,
        sends: list[tuple[asyncio.Future[object], Record]],
    ) -> None:
        headers = dead_letter_headers(
            list(rec.headers or ()),
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            error_class=why.kind,
            error_message=why.reason,
            source=self.source,
        )
        self.log.warning(
            "dead-lettering %s[%d]@%d: %s: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            why.kind,
            why.reason,
        )
        await self._send((self.settings.dlq_topic, rec.key, rec.value, headers), sends)
        self.stats.dead_lettered += 1

    async def _send(
        self, record: Record, sends: list[tuple[asyncio.Future[object], Record]]
    ) -> None:
        topic, key, value, headers = record

        async def enqueue() -> asyncio.Future[object]:
            fut: asyncio.Future[object] = await self.producer.send(
                topic, value=value, key=key, headers=headers
            )
            return fut

        # Not awaiting the ack here: the batch's futures are gathered once in _flush.
        sends.append((await self.infra.retry("produce", enqueue), record))

    async def _flush(self, sends: list[tuple[asyncio.Future[object], Record]]) -> None:
        """Wait until Kafka acknowledged every reply and dead letter; re-send what failed (the
        copies carry the same message ids, so receivers dedupe them)."""
        while sends:
            results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
            again: list[Record] = []
            for (_, record), res in zip(sends, results, strict=True):
                if not isinstance(res, BaseException):
                    continue
                if isinstance(res, INFRA_ERRORS) or (isinstance(res, KafkaError) and res.retriable):
                    again.append(record)
                else:
                    self.stats.errors += 1
                    self.log.error("cannot produce to %s, dropping the record: %r", record[0], res)
            sends = []
            if again:
                self.log.warning("%d records not acknowledged; re-sending", len(again))
                if await self.infra.pause(0.2):
                    raise Abandon("flush")
                for record in again:
                    await self._send(record, sends)
