"""The choreography tracker: follows a choreographed saga's events into the same Redis hash,
history and state indexes the orchestrator writes, so `saga status`, `saga list` and
`redis-cli HGETALL saga:<id>` show it. Run it with `saga tracker run <module>:<DESCRIPTION>`.

It only watches: it sends no command and publishes no event, and the only other record it
writes is a dead letter for an event record nobody can use. Per event, in order:

1. decode (`schemas.choreography`); a record that is not an event (bad JSON, no type, no saga
   id, unknown fields, too large) goes to the DLQ with the reason, source `tracker:<name>`;
2. load the saga's hash; a hash the orchestrator owns (no `mode: choreography`) is never
   touched: the event is skipped with a warning;
3. decide with the pure rule `orchestrator.core.choreography.track`;
4. write with the orchestrator's own atomic step (`lua/step.lua`): the version compared, the
   event id remembered in `saga:<id>:seen` (a copy changes nothing), the changed fields, one
   history entry, the state index, the retention TTL once final. Another tracker replica that
   got there first makes the version differ: the event is decided again on what it wrote.

Offsets are committed after the batch is in Redis, so a crash re-reads events, and the seen
set makes that harmless. Events of a type the choreography does not name are recorded as
ignored in a tracked saga's history, and skipped for a saga not tracked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from infra import kafka as kafka_factory
from infra import redis as redis_factory
from infra.errors import is_transient
from infra.retry import Backoff, Stopped, retry
from orchestrator.config import OrchestratorSettings
from orchestrator.core.choreography import MODE, MODE_FIELD, Choreography, Observed, track
from orchestrator.core.model import FINAL
from orchestrator.engine import history as saga_history
from orchestrator.engine.history import HISTORY_CAP
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import decode_fields, from_fields, iso, to_fields
from orchestrator.engine.stepargs import StepArgs, StepKeys, script_argv
from orchestrator.engine.store import SEEN_CAP
from schemas.choreography import MESSAGE_TYPE, decode_event, event_id_of
from schemas.dlq import header, headers_for
from schemas.headers import H_MESSAGE_TYPE
from schemas.wire import DecodeError

T = TypeVar("T")
log = logging.getLogger(__name__)

#: times an event is decided again when another writer changed the saga meanwhile
MAX_CONFLICTS = 20


def group_id(prefix: str, name: str) -> str:
    """One consumer group per tracked choreography: replicas share its partitions."""
    return f"{prefix}-tracker-{name}"


@dataclass
class TrackerStats:
    batches: int = 0
    applied: int = 0
    ignored: int = 0  # recorded in the saga's history as ignored, with the reason
    duplicates: int = 0  # an event id seen before: nothing written
    skipped: int = 0  # not recorded anywhere but the log (see the reasons above)
    dead_lettered: int = 0
    commits: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class TrackerStore:
    """The Redis side: load a tracked saga, apply one event to it atomically."""

    def __init__(
        self, redis: Redis, keys: Keys, c: Choreography, settings: OrchestratorSettings
    ) -> None:
        self.redis, self.keys, self.choreography = redis, keys, c
        self.definition = c.definition()
        self.retention_s = settings.retention_s
        self.tombstone_retention_s = settings.tombstone_retention_s
        source = resources.files("orchestrator.engine").joinpath("lua", "step.lua").read_text()
        self._step = redis.register_script(source)

    async def apply(self, saga_id: str, event: Observed) -> tuple[str, str]:
        """(what happened, why): applied, ignored, duplicate, or skipped."""
        for _ in range(MAX_CONFLICTS):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.saga(saga_id))
                pipe.get(self.keys.tombstone(saga_id))
                raw, gone = await pipe.execute()
            before = decode_fields(raw)
            if not before and gone is not None:
                return "skipped", "the saga finished and its keys expired"
            if before and before.get(MODE_FIELD) != MODE:
                return "skipped", f"saga {saga_id} is an orchestrated {before.get('type')!r}"
            try:
                state = from_fields(before, self.definition, saga_id) if before else None
            except (KeyError, ValueError) as exc:  # a hash edited by hand
                return "skipped", f"its hash cannot be read ({type(exc).__name__}: {exc})"
            now = int(time.time() * 1000)
            t = track(self.choreography, state, before.get("start_input", ""), event, saga_id, now)
            if t.state is None:
                return "skipped", t.note
            applied = t.outcome == "applied"
            new = t.state
            fields = to_fields(new, self.definition) | {MODE_FIELD: MODE}
            if t.start_input:
                fields["start_input"] = t.start_input
            before_status = state.status.value if state else None
            k = self.keys
            keys = StepKeys(
                saga=k.saga(saga_id),
                history=k.history(saga_id),
                seen=k.seen(saga_id),
                outbox=k.outbox_of(k.partition(saga_id)),
                timers=k.timers_of(k.partition(saga_id)),
                old_index=k.index(before_status or new.status.value),
                new_index=k.index(new.status.value),
                tombstone=k.tombstone(saga_id),
            )
            args = StepArgs(
                message_id=event.event_id,
                expected_version=state.version if state else 0,
                applied=applied,
                saga_id=saga_id,
                entered_ms=new.entered_ms,
                state_changed=applied and before_status != new.status.value,
                final=new.status in FINAL,
                retention_s=self.retention_s,
                tombstone_retention_s=self.tombstone_retention_s,
                fields=[x for f, v in fields.items() if before.get(f) != v for x in (f, v)]
                if applied
                else [],
                drop_fields=[f for f in before if f not in fields] if applied else [],
                history=saga_history.encode(
                    iso(now), event.event_type, t.outcome, new.status.value, t.note, event.event_id
                ),
                history_cap=HISTORY_CAP,
                remember="seen",
                skip_recorded=False,
                seen_cap=SEEN_CAP,
                timers=[],
                cancel_timers=[],
            )
            reply = await self._step(keys=keys.as_list(), args=script_argv(args, []))
            code = int(reply[0])
            if code == 1:
                return t.outcome, t.note
            if code == 0:
                return "duplicate", f"event {event.event_id} was tracked before"
            if code == -2:
                return "skipped", f"saga {saga_id} remembers {SEEN_CAP} events already"
            # -1: another replica wrote this saga since it was loaded: decide again
        return "skipped", f"saga {saga_id} kept changing under {MAX_CONFLICTS} attempts"


class Tracker:
    def __init__(
        self,
        settings: OrchestratorSettings,
        choreography: Choreography,
        topic: str,
        stop: asyncio.Event,
        idle_exit_s: float | None = None,
    ) -> None:
        self.settings, self.choreography, self.topic, self.stop = (
            settings,
            choreography,
            topic,
            stop,
        )
        self.idle_exit_s = idle_exit_s
        self.source = f"tracker:{choreography.name}"
        self.stats = TrackerStats()
        self.assigned = False

    async def run(self) -> TrackerStats:
        redis = redis_factory.client(self.settings, decode=True)
        store = TrackerStore(
            redis, Keys(self.settings.key_prefix), self.choreography, self.settings
        )
        consumer = kafka_factory.consumer(
            self.settings,
            group_id=group_id(self.settings.key_prefix, self.choreography.name),
            client_id=self.source,
            max_poll_records=500,
        )
        producer = kafka_factory.producer(self.settings, client_id=self.source)
        try:
            await self._retry("connect to Kafka", producer.start)
            await self._retry("connect to Kafka", consumer.start)
            consumer.subscribe([self.topic])
            log.info("tracking %s on %s", self.choreography.name, self.topic)
            await self._loop(consumer, producer, store)
        except Stopped:
            pass
        finally:
            for client in (consumer, producer):
                with contextlib.suppress(Exception):
                    await client.stop()
            await redis.aclose()
        log.info("tracker %s stopped: %s", self.choreography.name, self.stats)
        return self.stats

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        return await retry(
            op, what=what, log=log, stop=self.stop, backoff=Backoff(max_s=5), retry_on=is_transient
        )

    async def _loop(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, store: TrackerStore
    ) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            batch = await self._retry("poll", lambda: consumer.getmany(timeout_ms=200))
            self.assigned = self.assigned or bool(consumer.assignment())
            records = [r for rs in batch.values() for r in rs]
            if not records:
                if self.idle_exit_s is not None and time.monotonic() - last > self.idle_exit_s:
                    return
                continue
            last = time.monotonic()
            self.stats.batches += 1
            for r in records:
                await self._one(r, producer, store)
            offsets = {tp: rs[-1].offset + 1 for tp, rs in batch.items() if rs}
            try:
                await consumer.commit(offsets)
                self.stats.commits += 1
            except Exception as exc:  # re-read after a rebalance or restart: harmless
                log.warning("commit failed (%r); the batch will be read again", exc)

    async def _one(
        self, rec: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer, store: TrackerStore
    ) -> None:
        """Track one record, or dead-letter it (acknowledged before the batch is committed)."""
        headers = list(rec.headers or ())
        kind = header(headers, H_MESSAGE_TYPE)
        where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
        if kind is not None and kind != MESSAGE_TYPE:
            self._count("skipped")
            log.info("skipping %s: a %s, not a domain event", where, kind[:64])
            return None
        try:
            event = decode_event(rec.value, self.settings.max_message_bytes)
        except DecodeError as exc:
            self._count("dead_lettered")
            log.warning("dead-lettering %s: %s: %s", where, exc.kind, exc.reason)
            dead = headers_for(rec, exc.kind, exc.reason, self.source)
            topic = self.settings.dlq_topic
            await self._retry(
                "dead-letter",
                lambda: producer.send_and_wait(topic, rec.value, rec.key, headers=dead),
            )
            return
        observed = Observed(
            event.event_type,
            event_id_of(event, headers, rec.topic, rec.partition, rec.offset),
            event.data,
            event.source,
        )
        what, why = await self._retry("track", lambda: store.apply(event.saga_id, observed))
        self._count(what)
        log.log(
            logging.WARNING if what == "skipped" else logging.DEBUG,
            "%s %s %s: %s",
            event.saga_id,
            event.event_type,
            what,
            why,
        )

    def _count(self, what: str) -> None:
        self.stats.outcomes[what] = self.stats.outcomes.get(what, 0) + 1
        attr = {"duplicate": "duplicates"}.get(what, what)
        setattr(self.stats, attr, getattr(self.stats, attr) + 1)


async def run(
    settings: OrchestratorSettings,
    choreography: Choreography,
    topic: str,
    stop: asyncio.Event | None = None,
    idle_exit_s: float | None = None,
) -> TrackerStats:
    """Track until `stop` is set (SIGTERM/SIGINT when none is given)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
    return await Tracker(settings, choreography, topic, stop, idle_exit_s).run()
