"""A scripted participant for orchestrator tests: it reads every participant's commands from
the real topics (in the settings' command-topic mode: `tests/support/commands.py`) and answers
each command as the test's `behaviour` says (completed, failed, compensated, silence, twice).
It keeps every command it saw so tests can check order and exactly-once effects."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from infra import kafka
from schemas import codec
from schemas.config import Settings
from schemas.messages import Envelope, SagaCommand, StepCompensated, StepCompleted, StepFailed
from tests.support import commands

Answer = Literal["ok", "fail", "retry", "silent", "twice"]
Behaviour = Callable[[SagaCommand], Answer]


def always_ok(cmd: SagaCommand) -> Answer:
    return "ok"


def reply_for(cmd: SagaCommand, answer: Answer) -> Envelope | None:
    common = dict(
        message_id=f"{cmd.message_id}:reply",
        saga_id=cmd.saga_id,
        saga_type=cmd.saga_type,
        correlation_id=cmd.correlation_id,
        causation_id=cmd.message_id,
        step=cmd.step,
        attempt=cmd.attempt,
        command_id=cmd.message_id,
        command_type=cmd.command_type,
        compensation=cmd.compensation,
    )
    if answer == "silent":
        return None
    if answer in ("fail", "retry"):
        return StepFailed(**common, retryable=answer == "retry", reason=f"scripted {answer}")
    if cmd.compensation:
        return StepCompensated(**common)
    return StepCompleted(**common, result={"by": "scripted", "step": cmd.step})


class ScriptedParticipant:
    def __init__(
        self, settings: Settings, behaviour: Behaviour = always_ok, batch_delay_s: float = 0.0
    ) -> None:
        self.s = settings
        self.batch_delay_s = batch_delay_s  # a slow participant keeps many sagas in flight
        self.behaviour = behaviour
        self.seen: list[SagaCommand] = []
        self.by_saga: dict[str, list[SagaCommand]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> ScriptedParticipant:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        # no consumer group: it never commits, and reads every partition from the start
        async with (
            commands.reading(self.s) as consumer,
            kafka.started(kafka.producer(self.s)) as producer,
        ):
            self._ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=200)
                if batch and self.batch_delay_s:
                    await asyncio.sleep(self.batch_delay_s)
                futures = []
                for rs in batch.values():
                    for r in rs:
                        futures.extend(await self._answer(producer, r.value))
                await asyncio.gather(*futures)

    async def _answer(self, producer: AIOKafkaProducer, value: bytes) -> list[Any]:
        """Note a command and send the scripted answer (the send futures); skip the rest."""
        try:
            msg = codec.decode(value)
        except codec.DecodeError:
            return []
        if not isinstance(msg, SagaCommand):
            return []
        self.seen.append(msg)
        self.by_saga[msg.saga_id].append(msg)
        answer = self.behaviour(msg)
        reply = reply_for(msg, "ok" if answer == "twice" else answer)
        if reply is None:
            return []
        encoded, key = codec.encode(reply), msg.saga_id.encode()
        return [
            await producer.send(self.s.events_topic, encoded, key)
            for _ in range(2 if answer == "twice" else 1)
        ]
