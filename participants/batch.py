"""One batch of records: route, look up, let the middleware prepare, run the commands (different
sagas concurrently, one saga in order), publish replies and dead letters, wait for Kafka's acks.

`BatchProcessor.process` returns True when every record is settled and the batch's offsets may
be committed; False when a stop was requested while Redis or Kafka was unreachable (nothing is
committed; the records come back on the next start, and the stored outcomes make that harmless).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from functools import partial

from infra.rdkafka import Producer, Record, TopicPartition
from infra.retry import Stopped
from participants.config import WorkerOptions
from participants.context import BatchScope
from participants.errors import InfrastructureError
from participants.handling import CommandRunner
from participants.outbox import Outbox
from participants.outcome import Outcome, reply_record
from participants.participant import Participant
from participants.reactions import Delivery, Reactor, route_event
from participants.routing import DeadLetter, Deliver, dedicated, route, schema_values
from participants.runtime import Infra, WorkerStats
from participants.store import Known, Store
from schemas.avro import RegistryUnavailableError, fetch_unknown_schemas
from schemas.config import Settings
from schemas.dlq import headers_for
from schemas.messages import SagaCommand

Batch = dict[TopicPartition, list[Record]]


class BatchProcessor:
    def __init__(
        self,
        settings: Settings,
        participant: Participant,
        options: WorkerOptions,
        store: Store,
        producer: Producer,
        infra: Infra,
        stats: WorkerStats,
        rng: random.Random,
    ) -> None:
        self.settings, self.participant, self.options = settings, participant, options
        self.store, self.producer, self.infra, self.stats = store, producer, infra, stats
        self.log = logging.getLogger(f"participants.{participant.name}")
        self.source = f"participant:{participant.name}"
        self.runner = CommandRunner(settings, participant, store, infra, stats, rng, self.log)
        self.reactor = Reactor(
            participant, self.runner, store, infra, stats, options.concurrency, self.log
        )

    async def process(self, batch: Batch) -> bool:
        self.stats.batches += 1
        outbox = Outbox(self.producer, self.infra, self.stats, self.log)
        commands: list[SagaCommand] = []
        events: list[Delivery] = []
        abandoned = False
        try:
            await self._fetch_schemas(batch)
            for records in batch.values():
                for rec in records:
                    if rec.topic == self.participant.events_topic and self.participant.reactions:
                        d = route_event(rec, self.participant, self.settings.max_message_bytes)
                        if isinstance(d, Delivery):
                            events.append(d)
                        else:
                            self.stats.skipped += 1
                            log = self.log.warning if d.poison else self.log.debug
                            log(
                                "skipping %s[%d]@%d: %s",
                                rec.topic,
                                rec.partition,
                                rec.offset,
                                d.why,
                            )
                        continue
                    r = route(
                        rec.value,
                        list(rec.headers or ()),
                        self.participant.name,
                        self.settings.max_message_bytes,
                        dedicated(self.settings, self.participant.name, rec.topic),
                    )
                    if isinstance(r, Deliver):
                        commands.append(r.command)
                    elif isinstance(r, DeadLetter):
                        await self._dead_letter(rec, r, outbox)
                    else:
                        self.stats.skipped += 1
            if commands:
                await self._handle_all(commands, outbox)
            if events:
                await self.reactor.react_all(events, outbox, self._prepare)
            await outbox.flush()
        except* Stopped:
            abandoned = True
        return not abandoned

    async def _fetch_schemas(self, batch: Batch) -> None:
        """Registry mode: the schema ids first seen in this batch, fetched before routing; a
        registry outage is waited out like a Redis one (nothing dead-lettered or committed)."""

        async def retry(what: str, op: Callable[[], Awaitable[bool]]) -> bool:
            async def outage_as_infra() -> bool:
                try:
                    return await op()
                except RegistryUnavailableError as exc:
                    raise InfrastructureError(str(exc)) from exc

            return await self.infra.retry(what, outage_as_infra)

        pairs = [(rec.value, list(rec.headers or ())) for rs in batch.values() for rec in rs]
        await fetch_unknown_schemas(schema_values(pairs, self.participant.name), retry)

    async def _handle_all(self, commands: list[SagaCommand], outbox: Outbox) -> None:
        known = await self.infra.retry("look up commands", partial(self.store.lookup, commands))
        scope = await self._prepare(commands, known)
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
                    outcome = await self.runner.one(cmd, k, scope)
                    if outcome is None:
                        continue
                    seen[cmd.message_id] = outcome
                    if outcome.kind != "failed":
                        done.add((cmd.step, cmd.compensation))
                    if cmd.compensation:
                        tombstoned.add(cmd.step)
                    try:
                        await self._reply(cmd, outcome, outbox)
                    except Stopped:
                        raise
                    except Exception:
                        self.stats.errors += 1
                        self.log.exception("cannot build the reply to %s", cmd.message_id)

        async with asyncio.TaskGroup() as tg:
            for indexes in by_saga.values():
                tg.create_task(saga_in_order(indexes))

    async def _prepare(self, commands: list[SagaCommand], known: list[Known]) -> BatchScope:
        """The batch as middleware sees it, after each middleware's `before_batch`. An error
        there (other than an outage, which is waited out) is logged; the batch goes on."""
        new = [
            cmd
            for cmd, k in zip(commands, known, strict=True)
            if not k.settled and self.participant.handler_for(cmd) is not None
        ]
        scope = BatchScope(self.participant.name, self.settings, self.store.redis, new)
        for mw in self.participant.middleware if new else ():
            try:
                await self.infra.retry("before batch", partial(mw.before_batch, scope))
            except Stopped:
                raise
            except Exception:
                self.stats.errors += 1
                self.log.exception("%r.before_batch failed; the batch goes on", mw)
        return scope

    async def _reply(self, cmd: SagaCommand, outcome: Outcome, outbox: Outbox) -> None:
        key, value, headers = reply_record(
            cmd, outcome, self.participant.name, self.settings.output_format
        )
        outbox.send((self.settings.events_topic, key, value, headers))
        self.stats.replies += 1

    async def _dead_letter(self, rec: Record, why: DeadLetter, outbox: Outbox) -> None:
        headers = headers_for(rec, why.kind, why.reason, self.source)
        self.log.warning(
            "dead-lettering %s[%d]@%d: %s: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            why.kind,
            why.reason,
        )
        outbox.send((self.settings.dlq_topic, rec.key, rec.value, headers))
        self.stats.dead_lettered += 1
