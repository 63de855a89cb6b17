"""The daemon loop: consume a batch, decode, load, decide, write, publish, commit.

Ordering and safety, in one place:
- each input's effects (state, history, outbox, timers, dedupe id, offset) are written by one
  atomic `step.lua` call, guarded by the saga's version (no stale writer) and the input's id
  (effectively once);
- commands are published from the outbox after the write, and removed only once Kafka acked
  them; the relay re-publishes whatever a crash left behind;
- offsets are committed only after the writes and the publishes of the whole batch;
- poison goes to the dead-letter topic and the partition moves on; Kafka or Redis failures are
  retried with backoff, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError
from redis.asyncio import Redis

from infra import kafka
from infra import redis as redis_factory
from infra.errors import is_transient
from infra.retry import Backoff, Stopped, retry
from orchestrator.config import OrchestratorSettings
from orchestrator.core.decide import decide
from orchestrator.core.model import Event, Reply, SagaState, Start
from orchestrator.engine.keys import Keys
from orchestrator.engine.relay import Relay
from orchestrator.engine.sagas import SagaModules
from orchestrator.engine.statecodec import to_fields
from orchestrator.engine.store import RedisStore, Write
from orchestrator.engine.translate import UnknownStart, command_record, dedupe_id, to_event
from orchestrator.errors import ConflictError
from orchestrator.telemetry.logs import saga_extra
from orchestrator.telemetry.metrics import Metrics
from orchestrator.telemetry.tracing import log_extra, record_step_span, start_traceparent
from schemas import codec
from schemas.codec import DecodeError
from schemas.dlq import H_TRUNCATED, header, headers_for
from schemas.headers import H_MESSAGE_ID, H_MESSAGE_TYPE, H_TRACEPARENT
from schemas.messages import Envelope

log = logging.getLogger("orchestrator")
T = TypeVar("T")
MAX_CONFLICT_ROUNDS = 20


def retryable(exc: BaseException) -> bool:
    """What the loop waits out instead of failing: an outage (any Kafka error included: none of
    them is the input's fault), or inputs that kept losing the version race to another writer."""
    return is_transient(exc) or isinstance(exc, KafkaError | ConflictError)


@dataclass
class Input:
    record: ConsumerRecord[bytes, bytes]
    message: Envelope
    event: Event
    #: ops: when the saga last changed before this input (step latency, tracing spans)
    prev_updated_ms: int = 0


@dataclass
class Poison:
    record: ConsumerRecord[bytes, bytes]
    error_class: str
    reason: str


class Orchestrator:
    def __init__(
        self, settings: OrchestratorSettings, sagas: SagaModules, metrics: Metrics | None = None
    ) -> None:
        self.s = settings
        self.registry = sagas.registry
        self.starts = sagas.starts
        self.metrics = metrics or Metrics()
        self.stop_event = asyncio.Event()
        self.assigned: set[TopicPartition] = set()
        self._batch_lock = asyncio.Lock()
        self.redis: Redis | None = None
        self.store: RedisStore | None = None
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None

    # ---- lifecycle ----
    async def run(self) -> None:
        """Run until `stop()`; then drain the batch in flight, commit and close."""
        s = self.s
        self.redis = redis_factory.client(s)
        self.store = RedisStore(
            self.redis, Keys(s.key_prefix), self.registry, s.group, s.retention_s
        )
        self.producer = kafka.producer(s, max_batch_size=262_144)
        self.consumer = kafka.consumer(
            s, group_id=s.group, max_partition_fetch_bytes=4 * 1_048_576, fetch_max_wait_ms=50
        )
        relay_task = None
        try:
            await self._retrying("start kafka producer", self.producer.start)
            await self._retrying("start kafka consumer", self.consumer.start)
            self.consumer.subscribe([s.commands_topic, s.events_topic], listener=_Listener(self))
            relay = Relay(s, self.store, self.producer, self.stop_event, self.metrics)
            relay_task = asyncio.create_task(relay.run(), name="relay")
            log.info(
                "orchestrator started",
                extra={"group": s.group, "topics": f"{s.commands_topic},{s.events_topic}"},
            )
            while not self.stop_event.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=s.poll_timeout_ms, max_records=s.batch_max_records
                )
                records = [r for rs in batch.values() for r in rs]
                if records:
                    async with self._batch_lock:
                        await self.handle(records)
        except Stopped:
            log.info("stopping with a batch unfinished; it will be redelivered")
        finally:
            self.stop_event.set()
            if relay_task is not None:
                await relay_task
            await self.consumer.stop()
            await self.producer.stop()
            await self.store.aclose()
            await self.redis.aclose()
            log.info("orchestrator stopped")

    def stop(self) -> None:
        self.stop_event.set()

    # ---- what the HTTP API may see (orchestrator.ops.http.DaemonView) ----
    def partitions(self) -> list[tuple[str, int]]:
        return sorted((tp.topic, tp.partition) for tp in self.assigned)

    async def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: the broker's high watermark minus this copy's position."""
        c = self.consumer
        lag: dict[tuple[str, int], int] = {}
        if c is None:
            return lag
        for tp in list(self.assigned):
            try:
                high = c.highwater(tp)
                if high is None:
                    continue
                pos = await asyncio.wait_for(c.position(tp), 1.0)
                lag[(tp.topic, tp.partition)] = max(0, high - pos)
            except Exception:  # revoked meanwhile, or no position yet
                continue
        return lag

    # ---- one batch ----
    async def handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        t0 = time.perf_counter()
        inputs, poison = self.decode(records)
        t1 = time.perf_counter()
        writes, more_poison = await self._retrying("apply to redis", lambda: self.apply(inputs))
        poison += more_poison
        t2 = time.perf_counter()
        await self._retrying("publish", lambda: self.publish(writes, poison))
        t3 = time.perf_counter()
        await self.commit(records)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "batch of %d records, %d inputs: decode %.1f ms, apply %.1f ms, publish %.1f ms,"
                " commit %.1f ms",
                len(records),
                len(inputs),
                (t1 - t0) * 1000,
                (t2 - t1) * 1000,
                (t3 - t2) * 1000,
                (time.perf_counter() - t3) * 1000,
            )

    def decode(
        self, records: list[ConsumerRecord[bytes, bytes]]
    ) -> tuple[list[Input], list[Poison]]:
        inputs: list[Input] = []
        poison: list[Poison] = []
        for r in records:
            if (
                r.topic == self.s.commands_topic
                and header(r.headers, H_MESSAGE_TYPE) == "SagaCommand"
            ):
                continue  # our own commands to participants share the topic
            try:
                msg = codec.decode(r.value, self.s.max_message_bytes)
            except DecodeError as exc:
                poison.append(Poison(r, exc.kind, exc.reason))
                continue
            try:
                event = to_event(msg, self.starts)
            except UnknownStart as exc:
                poison.append(Poison(r, "unknown_saga_type", str(exc)))
                continue
            except Exception as exc:  # a saga module's start mapping is user code: never block
                log.exception("start mapping failed for %s", type(msg).__name__)
                poison.append(Poison(r, type(exc).__name__, str(exc)[:500]))
                continue
            if isinstance(event, Start):  # ops: the saga's trace: message, header, or new
                tp = start_traceparent(event.traceparent, header(r.headers, H_TRACEPARENT))
                event = replace(event, traceparent=tp)
            if event is not None:
                inputs.append(Input(r, msg, event))
        self.metrics.inputs += len(inputs)
        return inputs, poison

    async def apply(self, inputs: list[Input]) -> tuple[list[Write], list[Poison]]:
        """Decide and write every input; re-decide the sagas another writer changed meanwhile."""
        assert self.store is not None
        done: list[Write] = []
        poison: list[Poison] = []
        todo = inputs
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not todo:
                break
            ids = list(dict.fromkeys(i.message.saga_id for i in todo))
            raws = await self.store.load_raw(ids)
            states: dict[str, SagaState | None] = {}
            for sid, raw in raws.items():
                states[sid] = self.store.parse(raw)
            writes: list[tuple[Input, Write]] = []
            now = int(time.time() * 1000)
            for inp in todo:
                sid = inp.message.saga_id
                if raws[sid] and states[sid] is None:
                    poison.append(
                        Poison(
                            inp.record,
                            "unknown_saga_type",
                            "saga's type or version is not registered",
                        )
                    )
                    continue
                w = self._decide(inp, states[sid], now, poison)
                if w is not None:
                    writes.append((inp, w))
                    w.before_fields = raws[sid]
                    if w.transition.outcome == "applied":
                        states[sid] = w.transition.state
                        raws[sid] = w.fields
            results = await self.store.apply([w for _, w in writes])
            todo = []
            for (inp, w), res in zip(writes, results, strict=True):
                if res.status == "conflict":
                    todo.append(inp)
                    continue
                if res.status == "ok":
                    w.outbox_ids = res.outbox_ids
                    done.append(w)
                    self._observe(inp, w)
                else:
                    self.metrics.duplicates += 1
        else:
            raise ConflictError(f"{len(todo)} inputs kept conflicting; will retry the batch")
        return done, poison

    def _decide(
        self, inp: Input, state: SagaState | None, now: int, poison: list[Poison]
    ) -> Write | None:
        msg = inp.message
        inp.prev_updated_ms = state.updated_ms if state else 0  # ops: step latency
        definition = None
        if state is not None:
            definition = self.registry.version(state.saga_type, state.definition_version)
        try:
            t = decide(state, inp.event, now, self.registry, definition)
        except Exception as exc:  # a bug must not block the partition: dead-letter, loudly
            log.exception("decide failed", extra=saga_extra(msg.saga_id, msg.correlation_id or ""))
            poison.append(Poison(inp.record, type(exc).__name__, str(exc)[:500]))
            return None
        if t.outcome == "rejected" or t.state is None:
            poison.append(Poison(inp.record, "rejected", t.note))
            return None
        d = definition or self.registry[t.state.saga_type]
        outbox = [
            command_record(t.state, c, msg.message_id, self.s.output_format) for c in t.commands
        ]
        r = inp.record
        return Write(
            saga_id=msg.saga_id,
            message_id=dedupe_id(
                msg, f"{r.topic}:{r.partition}:{r.offset}", header(r.headers, H_MESSAGE_ID)
            ),
            expected_version=state.version if state else 0,
            transition=t,
            definition=d,
            before_status=state.status.value if state else None,
            offset_field=f"{r.topic}:{r.partition}",
            offset=r.offset,
            outbox=outbox,
            event_name=type(msg).__name__,
            fields=to_fields(t.state, d) if t.outcome == "applied" else {},
        )

    def _observe(self, inp: Input, w: Write) -> None:
        t = w.transition
        assert t.state is not None
        extra = saga_extra(w.saga_id, t.state.correlation_id) | log_extra(t.state.traceparent)
        log.info(t.note, extra=extra)
        self.metrics.observe(w.before_status, t, isinstance(inp.event, Start))
        if isinstance(inp.event, Reply) and t.outcome == "applied" and inp.prev_updated_ms:
            # ops: step latency = time since the saga's previous transition (command sent)
            end = t.state.updated_ms
            self.metrics.observe_step_latency(max(0, end - inp.prev_updated_ms) / 1000)
            attrs = {"saga.id": w.saga_id, "saga.reply": inp.event.kind}
            record_step_span(t.state.traceparent, inp.event.step, inp.prev_updated_ms, end, attrs)

    async def publish(self, writes: list[Write], poison: list[Poison]) -> None:
        assert self.producer is not None and self.store is not None
        futures: list[Awaitable[Any]] = []
        ids: list[bytes] = []
        for w in writes:
            for entry, oid in zip(w.outbox, w.outbox_ids, strict=False):
                send = self.producer.send(
                    self.s.commands_topic, entry.value, entry.key, headers=entry.headers
                )
                futures.append(await send)
                ids.append(oid)
        dead = [await self._dead_letter(p) for p in poison]
        await asyncio.gather(*futures)
        for p, outcome in zip(
            poison, await asyncio.gather(*dead, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, MessageSizeTooLargeError):
                # The dead-letter topic takes less than the input topic did: keep the head of the
                # value and say so, rather than block the partition.
                await (await self._dead_letter(p, truncate=True))
            elif isinstance(outcome, BaseException):
                raise outcome
        await self.store.outbox_delete(ids)
        self.metrics.commands_sent += len(ids)
        self.metrics.dead_lettered += len(poison)

    async def _dead_letter(self, p: Poison, truncate: bool = False) -> Awaitable[Any]:
        assert self.producer is not None
        r = p.record
        log.warning(
            "dead-lettered %s:%s@%s: %s: %s",
            r.topic,
            r.partition,
            r.offset,
            p.error_class,
            p.reason,
        )
        headers = headers_for(r, p.error_class, p.reason, "orchestrator")
        value = r.value
        if truncate and value is not None:
            headers.append((H_TRUNCATED, str(len(value)).encode()))
            value = value[:65536]
        future: Awaitable[Any] = await self.producer.send(
            self.s.dlq_topic, value, r.key, headers=headers
        )
        return future

    async def commit(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self.consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced: the new owner re-reads these inputs and the dedupe ids make
            # that harmless.
            log.warning("commit failed after a rebalance: %s", exc)

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Retry an operation on infrastructure errors with capped exponential backoff."""

        def count(exc: BaseException) -> None:
            self.metrics.infra_errors += 1

        return await retry(
            op,
            what=what,
            log=log,
            stop=self.stop_event,
            backoff=Backoff(max_s=self.s.infra_backoff_max_s),
            retry_on=retryable,
            on_retry=count,
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the batch in flight finish and commit before partitions move to another copy."""

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.orch._batch_lock:
            self.orch.assigned -= set(revoked)
        log.info("partitions revoked: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.orch.assigned |= set(assigned)
        log.info("partitions assigned: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
