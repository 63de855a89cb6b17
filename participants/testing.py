"""Test and demo helpers: build and produce commands, read replies, run a worker in-process.

Every wait here is a deadline on a condition, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from infra import kafka as kafka_factory
from participants.config import WorkerOptions
from participants.participant import Participant
from participants.runtime import WorkerStats
from participants.worker import Worker
from schemas import codec
from schemas.config import Settings
from schemas.dlq import Headers
from schemas.headers import H_MESSAGE_ID, H_MESSAGE_TYPE, H_PARTICIPANT, H_SAGA_ID
from schemas.messages import Envelope, SagaCommand

FAST = WorkerOptions(poll_timeout_ms=50, max_backoff_s=0.5, revoke_wait_s=5.0)


def order(
    items: dict[str, int] | None = None,
    amount: str = "12.50",
    payment_method: str = "card",
    customer_id: str = "c-1",
    order_id: str | None = None,
) -> dict[str, Any]:
    """Order data as the orchestrator sends it in `SagaCommand.data`."""
    return {
        "orderId": order_id,
        "customerId": customer_id,
        "items": [{"productId": p, "quantity": q} for p, q in (items or {"SKU-1": 1}).items()],
        "amount": amount,
        "currency": "USD",
        "paymentMethod": payment_method,
        "shippingAddress": "1 Test Street",
    }


def command(
    saga_id: str,
    participant: str,
    command_type: str,
    step: str,
    *,
    attempt: int = 1,
    compensation: bool = False,
    data: dict[str, Any] | None = None,
    original_result: dict[str, str] | None = None,
) -> SagaCommand:
    """A command with the orchestrator's id scheme `<saga>:<step>:<action|compensation>:<n>`."""
    kind = "compensation" if compensation else "action"
    return SagaCommand(
        message_id=f"{saga_id}:{step}:{kind}:{attempt}",
        saga_id=saga_id,
        participant=participant,
        command_type=command_type,
        step=step,
        attempt=attempt,
        compensation=compensation,
        data=data if data is not None else order(),
        original_result=original_result,
        correlation_id=f"corr-{saga_id}",
        causation_id=f"{saga_id}:start",
    )


def command_headers(cmd: SagaCommand) -> Headers:
    return [
        (H_MESSAGE_TYPE, b"SagaCommand"),
        (H_PARTICIPANT, cmd.participant.encode()),
        (H_SAGA_ID, cmd.saga_id.encode()),
        (H_MESSAGE_ID, cmd.message_id.encode()),
    ]


@dataclass(frozen=True)
class Raw:
    """A record to produce as is."""

    value: bytes
    key: bytes | None = None
    headers: Headers | None = None


async def produce(
    settings: Settings, records: Iterable[SagaCommand | Raw], topic: str | None = None
) -> None:
    """Produce commands (with the orchestrator's headers) or raw records, and wait for the acks.
    Without `topic`, a command goes where the orchestrator would send it in the settings' mode
    (`Settings.command_topic_of` its participant), a raw record to the commands topic."""
    async with kafka_factory.started(kafka_factory.producer(settings)) as producer:
        futures = []
        for r in records:
            key: bytes | None
            if isinstance(r, SagaCommand):
                value = codec.encode(r, settings.output_format)
                key, headers = r.saga_id.encode(), command_headers(r)
                to = topic or settings.command_topic_of(r.participant)
            else:
                value, key, headers = r.value, r.key, r.headers or []
                to = topic or settings.commands_topic
            futures.append(await producer.send(to, value, key=key, headers=headers))
        await asyncio.gather(*futures)


@dataclass(frozen=True)
class Received:
    value: bytes
    key: bytes | None
    headers: Headers
    message: Envelope | None  # None when the value does not decode (a dead letter may not)

    def header(self, name: str) -> str | None:
        for k, v in reversed(self.headers):
            if k == name:
                return v.decode()
        return None


class TopicReader:
    """Reads a topic from the beginning (no consumer group) and keeps everything it saw."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self.seen: list[Received] = []
        self._consumer = kafka_factory.consumer(settings, topic, group_id=None)

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(
        self, done: Callable[[list[Received]], bool], timeout_s: float = 30.0
    ) -> list[Received]:
        """Read until `done(everything seen)` holds; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout_s
        while not done(self.seen):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met within {timeout_s}s on {self.topic}; "
                    f"saw {len(self.seen)} records"
                )
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for rec in records:
                    try:
                        msg: Envelope | None = codec.decode(rec.value)
                    except codec.DecodeError:
                        msg = None
                    self.seen.append(Received(rec.value, rec.key, list(rec.headers or ()), msg))
        return self.seen

    def replies_to(self, command_id: str) -> list[Any]:
        return [
            r.message for r in self.seen if getattr(r.message, "command_id", None) == command_id
        ]

    async def reply(self, command_id: str, timeout_s: float = 30.0) -> Any:
        """The (first) reply to a command."""
        await self.until(lambda _: bool(self.replies_to(command_id)), timeout_s)
        return self.replies_to(command_id)[0]

    async def replies(self, command_ids: Iterable[str], timeout_s: float = 30.0) -> dict[str, Any]:
        wanted = set(command_ids)

        def have_all(_: list[Received]) -> bool:
            got = {getattr(r.message, "command_id", None) for r in self.seen}
            return wanted <= got

        await self.until(have_all, timeout_s)
        return {cid: self.replies_to(cid)[0] for cid in wanted}


class RunningWorker:
    def __init__(self, worker: Worker, task: asyncio.Task[WorkerStats]) -> None:
        self.worker, self.task = worker, task

    @property
    def stats(self) -> WorkerStats:
        return self.worker.stats

    async def stop(self, timeout_s: float = 30.0) -> WorkerStats:
        self.worker.stop.set()
        return await asyncio.wait_for(self.task, timeout_s)


@asynccontextmanager
async def running(
    settings: Settings,
    participant: Participant,
    options: WorkerOptions = FAST,
    seed: int | None = None,
) -> AsyncIterator[RunningWorker]:
    """Run a worker in this event loop for the duration of the block (stopped cleanly after)."""
    worker = Worker(settings, participant, options, asyncio.Event(), random.Random(seed))
    handle = RunningWorker(worker, asyncio.create_task(worker.run()))
    try:
        yield handle
    finally:
        if not handle.task.done():
            await handle.stop()
