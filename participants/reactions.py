"""Domain events in, domain events out: the reactions of a choreography (`Participant.on`).

A reaction is run exactly like a command, through `CommandRunner` and the SDK's guard, from a
`SagaCommand` built out of the event: its id is `<saga>:<step>:<action|compensation>:<attempt>`,
so the guard stores one outcome per (saga, step, direction, attempt), applies the handler's
effect once with it, answers a later copy from the record, and refuses a forward step whose
compensation ran. Effectively once per event id, and per step of a saga: a second OrderPlaced
for the same order, whatever its id, reserves nothing more.

What the outcome publishes is a pure function of (event, stored outcome), as a reply is of
(command, stored outcome): the event type the reaction names for it, the incoming data plus the
result (or plus `reason`), the outcome's time, and the id `<saga>:<step>:<direction>:<type>`.
A redelivered or duplicated event therefore publishes the same event again, and whoever reads
it dedupes it by that id. Published events go through the batch's outbox: acknowledged by
Kafka before the batch's offsets are committed.

With no orchestrator to retry, a retryable failure is tried again in place, up to the
reaction's `max_attempts` with a short backoff, before it counts as a failure.

Records on the event topic this participant cannot use are skipped, with the reason logged:
another service's events, and poison. Poison is dead-lettered by the choreography's tracker
(`orchestrator.engine.tracker`), the one reader of every event, so it lands in the DLQ once,
not once per service (the rule of `participants.routing` for the commands topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from infra.rdkafka import Record
from infra.retry import Stopped
from participants.context import BatchScope
from participants.handling import CommandRunner
from participants.outbox import Outbox
from participants.outcome import Outcome
from participants.participant import Participant, Reaction
from participants.runtime import Infra, WorkerStats
from participants.store import Known, Store
from schemas.choreography import (
    MESSAGE_TYPE,
    DomainEvent,
    decode_event,
    derived_id,
    encode_event,
    event_headers,
    event_id_of,
)
from schemas.dlq import header
from schemas.headers import H_MESSAGE_TYPE
from schemas.messages import SagaCommand
from schemas.wire import DecodeError

#: the pause before the second attempt of a retryable failure; doubled each time
FIRST_PAUSE_S = 0.2

Prepare = Callable[[list[SagaCommand], list[Known]], Awaitable[BatchScope]]


@dataclass(frozen=True)
class Delivery:
    """An event this participant reacts to, with its dedupe id and the reaction."""

    event: DomainEvent
    event_id: str
    reaction: Reaction

    @property
    def direction(self) -> str:
        return "compensation" if self.reaction.compensation else "action"

    def command(self, participant: str, attempt: int) -> SagaCommand:
        """The event as the command the guard and the handler see."""
        e, r = self.event, self.reaction
        return SagaCommand(
            message_id=derived_id(e.saga_id, r.step, self.direction, str(attempt)),
            saga_id=e.saga_id,
            saga_type=e.saga_type,
            correlation_id=e.correlation_id or e.saga_id,
            causation_id=self.event_id,
            participant=participant,
            command_type=e.event_type,
            step=r.step,
            attempt=attempt,
            compensation=r.compensation,
            data=e.data,
        )


@dataclass(frozen=True)
class Skipped:
    why: str
    #: worth a warning: a record nobody can use (the tracker dead-letters it)
    poison: bool = False


def route_event(rec: Record, svc: Participant, max_bytes: int) -> Delivery | Skipped:
    """What to do with one record of the event topic."""
    headers = list(rec.headers or ())
    kind = header(headers, H_MESSAGE_TYPE)
    if kind is not None and kind != MESSAGE_TYPE:
        return Skipped(f"a {kind[:64]}, not a domain event")
    try:
        event = decode_event(rec.value, max_bytes)
    except DecodeError as exc:
        return Skipped(f"not an event ({exc.kind}: {exc.reason})", poison=True)
    reaction = svc.reactions.get(event.event_type)
    if reaction is None:
        return Skipped(f"no reaction to {event.event_type}")
    event_id = event_id_of(event, headers, rec.topic, rec.partition, rec.offset)
    return Delivery(event, event_id, reaction)


def emitted(d: Delivery, outcome: Outcome, participant: str) -> DomainEvent | None:
    """The event an outcome publishes (None when the reaction names none for it)."""
    e, r = d.event, d.reaction
    if outcome.kind == "failed":
        event_type, data = r.fails, {**e.data, "reason": outcome.reason}
    else:
        event_type, data = r.emits, {**e.data, **outcome.result}
    if not event_type:
        return None
    at = datetime.fromtimestamp(outcome.time_ms / 1000, UTC) if outcome.time_ms else e.time
    return DomainEvent(
        event_id=derived_id(e.saga_id, r.step, d.direction, event_type),
        event_type=event_type,
        saga_id=e.saga_id,
        saga_type=e.saga_type,
        correlation_id=e.correlation_id or e.saga_id,
        causation_id=d.event_id,
        source=participant,
        time=at,
        data=data,
    )


class Reactor:
    def __init__(
        self,
        participant: Participant,
        runner: CommandRunner,
        store: Store,
        infra: Infra,
        stats: WorkerStats,
        concurrency: int,
        log: logging.Logger,
    ) -> None:
        self.participant, self.runner, self.store = participant, runner, store
        self.infra, self.stats, self.concurrency, self.log = infra, stats, concurrency, log

    async def react_all(self, deliveries: list[Delivery], outbox: Outbox, prepare: Prepare) -> None:
        """Run the batch's events: different sagas concurrently, one saga's in order."""
        name = self.participant.name
        first = [d.command(name, 1) for d in deliveries]
        known = await self._lookup(first)
        scope = await prepare(first, known)
        by_saga: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_saga.setdefault(d.event.saga_id, []).append(d)
        limit = asyncio.Semaphore(self.concurrency)

        async def saga_in_order(items: list[Delivery]) -> None:
            async with limit:
                for d in items:
                    await self._one(d, scope, outbox)

        async with asyncio.TaskGroup() as tg:
            for items in by_saga.values():
                tg.create_task(saga_in_order(items))

    async def _lookup(self, commands: list[SagaCommand]) -> list[Known]:
        return await self.infra.retry("look up events", lambda: self.store.lookup(commands))

    async def _one(self, d: Delivery, scope: BatchScope, outbox: Outbox) -> None:
        outcome: Outcome | None = None
        for attempt in range(1, d.reaction.max_attempts + 1):
            cmd = d.command(self.participant.name, attempt)
            # Looked up now, not with the batch: an earlier copy of this event in the same
            # batch has stored its outcome by now, and must not run the handler again.
            (known,) = await self._lookup([cmd])
            outcome = await self.runner.one(cmd, known, scope)
            if outcome is None or not (outcome.kind == "failed" and outcome.retryable):
                break
            if attempt < d.reaction.max_attempts:
                await self._pause(FIRST_PAUSE_S * 2 ** (attempt - 1))
        if outcome is None:  # swallowed by a middleware, or an SDK error (logged by the runner)
            return
        event = emitted(d, outcome, self.participant.name)
        if event is None:
            return
        topic = self.participant.events_topic
        record = (topic, event.saga_id.encode(), encode_event(event), event_headers(event))
        outbox.send(record)
        self.stats.replies += 1

    async def _pause(self, delay_s: float) -> None:
        """Wait before the next attempt; `Stopped` when the worker is asked to stop meanwhile
        (the batch is then left uncommitted, and the stored outcomes make its rerun harmless)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.infra.stop.wait(), min(delay_s, self.infra.backoff.max_s))
        if self.infra.stop.is_set():
            raise Stopped("stopping")
