"""The daemon loop: consume a batch, decode, load, decide, write, publish, commit.

Ordering and safety, in one place:
- each input's effects (state, history, outbox, timers, dedupe id) are written by one
  atomic `step.lua` call, guarded by the saga's version (no stale writer) and the input's id
  (effectively once);
- commands are published from the outbox after the write, and removed only once Kafka acked
  them; the relay re-publishes whatever a crash left behind;
- offsets are committed only after the writes and the publishes of the whole batch;
- poison goes to the dead-letter topic and the partition moves on; Kafka or Redis failures are
  retried with backoff (and shown in `/readyz` while they last), never dead-lettered; a command
  Kafka can never take dead-letters the input that wrote it (`publish`);
- a saga's inputs in one batch are written one after the other, each only after the previous
  one was written: never over another writer's change (`_apply_round`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis

from infra import kafka
from infra import redis as redis_factory
from infra.crashpoints import crash_point
from infra.errors import is_commit_refused, is_kafka_error, is_transient
from infra.rdkafka import Consumer, Producer, Record, TopicPartition
from infra.retry import Backoff, Stopped, retry
from orchestrator.config import OrchestratorSettings
from orchestrator.core.decide import decide
from orchestrator.core.model import Operator, Reply, SagaState, Start
from orchestrator.engine.cache import Loaded, StateCache, load
from orchestrator.engine.inputs import Input, decode_batch
from orchestrator.engine.keys import Keys
from orchestrator.engine.ownership import Ownership, Rebalance
from orchestrator.engine.publish import Outgoing, Poison, Publisher
from orchestrator.engine.relay import Relay
from orchestrator.engine.sagas import SagaModules
from orchestrator.engine.statecodec import to_fields
from orchestrator.engine.store import SEEN_CAP, RedisStore, Write
from orchestrator.engine.translate import command_record, dedupe_id
from orchestrator.errors import ConflictError
from orchestrator.telemetry.logs import saga_extra
from orchestrator.telemetry.metrics import Metrics
from orchestrator.telemetry.tracing import log_extra, record_step_span
from schemas.dlq import header
from schemas.headers import H_MESSAGE_ID

__all__ = ["Input", "Orchestrator", "Poison", "retryable"]
log = logging.getLogger("orchestrator")
T = TypeVar("T")
MAX_CONFLICT_ROUNDS = 20


def retryable(exc: BaseException) -> bool:
    """What the loop waits out instead of failing: an outage (any Kafka error included; the
    errors that are one record's own fault are handled per record by `publish`), or inputs
    that kept losing the version race to another writer."""
    return is_transient(exc) or is_kafka_error(exc) or isinstance(exc, ConflictError)


@dataclass
class _Applying:
    """A batch's inputs on their way into Redis; what is done stays done across retries."""

    todo: list[Input]
    done: list[tuple[Input, Write]] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)


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
        self.cache = StateCache(settings.state_cache_size, Keys.of(settings).partition)
        self.redis: Redis | None = None
        self.store: RedisStore | None = None
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.publisher: Publisher | None = None
        self.relay: Relay | None = None
        self.ownership: Ownership | None = None
        self._relay_task: asyncio.Task[None] | None = None

    # ---- lifecycle ----
    async def run(self) -> None:
        """Run until `stop()`; then drain the batch in flight, commit and close."""
        s = self.s
        self.redis = redis_factory.client(s)
        self.store = RedisStore(
            self.redis,
            Keys.of(s),
            self.registry,
            s.retention_s,
            s.tombstone_retention_s,
        )
        self.producer = kafka.rd_producer(s, **{"client.id": "orchestrator"})
        self.consumer = kafka.rd_consumer(  # static membership (settings): resume at once
            s,
            group_id=s.group,
            **{
                "client.id": "orchestrator",
                "max.partition.fetch.bytes": 4 * 1_048_576,
                "session.timeout.ms": s.consumer_session_timeout_ms,
                "heartbeat.interval.ms": min(3000, s.consumer_session_timeout_ms // 3),
            },
        )
        self.publisher = Publisher(s, self.producer, self.store, self.metrics)
        self.ownership = Ownership(self.redis, self.store.keys, self.metrics)
        self.relay = Relay(
            s, self.store, self.producer, self.stop_event, self.metrics, self.publisher,
            self.ownership,
        )  # fmt: skip
        relay_task = None
        try:
            await self._retrying("start kafka producer", self.producer.start)
            await self._retrying("start kafka consumer", self.consumer.start)
            await self._check_partitions(self.producer)
            listener = Rebalance(
                self._batch_lock, self.assigned, self.ownership, s.events_topic,
                self.cache.drop_partitions,
            )  # fmt: skip
            self.consumer.subscribe([s.commands_topic, s.events_topic], listener=listener)
            relay_task = asyncio.create_task(self.relay.run(), name="relay")
            self._relay_task = relay_task
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

    async def _check_partitions(self, producer: Producer) -> None:
        """A saga's timers and outbox entries (and on a Redis Cluster all its keys) live in
        partition `partition_of(id, topic_partitions)`, the partition Kafka gives its records,
        and each partition is served by the copy that owns it. Topics with another partition
        count would file sagas under partitions nobody serves: refuse to start."""
        for topic in (self.s.commands_topic, self.s.events_topic):
            ids = await self._retrying(
                f"read {topic}'s partitions", functools.partial(producer.partitions_for, topic)
            )
            n = len(ids)
            if n != self.s.topic_partitions:
                raise RuntimeError(
                    f"topic {topic} has {n} partitions but SAGA_TOPIC_PARTITIONS is "
                    f"{self.s.topic_partitions}: the relay's timers and outbox (and on a Redis "
                    "Cluster every key) are sharded by partition, so the two must be equal; "
                    f"set SAGA_TOPIC_PARTITIONS={n}"
                )

    # ---- what the HTTP API may see (orchestrator.ops.http.DaemonView) ----
    def partitions(self) -> list[tuple[str, int]]:
        return sorted((tp.topic, tp.partition) for tp in self.assigned)

    def problems(self) -> list[str]:
        """What keeps this copy from doing its work right now: a Redis or Kafka failure being
        retried ("redis: OOM command not allowed... (since 12s)"), a relay without a finished
        round for `relay_stalled_s`."""
        out = self.metrics.faults.problems()
        task, relay = self._relay_task, self.relay
        if task is None or relay is None or self.stop_event.is_set():
            return out
        if task.done():
            out.append("relay stopped")
        elif (stalled := relay.stalled_s()) > self.s.relay_stalled_s:
            out.append(f"relay stalled for {stalled:.0f}s")
        return out

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
    async def handle(self, records: list[Record]) -> None:
        assert self.publisher is not None
        publisher = self.publisher
        t0 = time.perf_counter()
        inputs, poison = await self.decode(records)
        t1 = time.perf_counter()
        writes, more_poison = await self.apply(inputs)
        crash_point("orchestrator.after_step")
        out = Outgoing.of([(inp.record, w) for inp, w in writes], poison + more_poison)
        t2 = time.perf_counter()
        await self._retrying("publish", lambda: publisher.publish(out))
        crash_point("orchestrator.after_publish")
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

    async def decode(self, records: list[Record]) -> tuple[list[Input], list[Poison]]:
        """Inputs and poison, in record order (`inputs.decode_batch`)."""
        inputs, poison = await decode_batch(records, self.s, self.starts, self._retrying)
        self.metrics.inputs += len(inputs)
        return inputs, poison

    async def apply(self, inputs: list[Input]) -> tuple[list[tuple[Input, Write]], list[Poison]]:
        """Decide and write every input. What is written stays written when a later write of
        the batch fails and the rest is retried with backoff."""
        job = _Applying(list(inputs))
        await self._retrying("apply to redis", lambda: self._apply_rounds(job))
        return job.done, job.poison

    async def _apply_rounds(self, job: _Applying) -> None:
        """Rounds of load, decide, write until every input is written, found a duplicate or
        poison; the sagas another writer changed meanwhile are reloaded and re-decided."""
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not job.todo:
                return
            await self._apply_round(job)
        if job.todo:
            raise ConflictError(f"{len(job.todo)} inputs kept conflicting; will retry the batch")

    async def _apply_round(self, job: _Applying) -> None:
        """One load (none for the sagas in `cache`) and the writes decided on it, in waves: a
        saga's n-th input of the round is written only after its (n-1)-th was written ("ok").
        After anything else (another writer won the version race, a duplicate, Redis refused)
        the saga's later inputs were decided on a state that does not exist: they are reloaded
        and re-decided next round, never written over that saga."""
        assert self.store is not None
        ids = list(dict.fromkeys(i.message.saga_id for i in job.todo))
        starting = {i.message.saga_id for i in job.todo if isinstance(i.event, Start)}
        loaded = await load(self.cache, self.store, ids, starting)
        self.metrics.state_cache_hits, self.metrics.state_cache_misses = self.cache.counts()
        chains = self._decide_chains(job.todo, loaded)
        job.todo = []
        failure: Exception | None = None
        while chains:
            wave: list[tuple[Input, Write]] = []
            for sid in list(chains):
                chain = chains[sid]
                while chain:
                    inp, verdict = chain.pop(0)
                    if isinstance(verdict, Poison):
                        job.poison.append(verdict)
                        continue
                    wave.append((inp, verdict))
                    break
                if not chain:
                    del chains[sid]
            if not wave:
                break
            try:
                results = await self.store.apply([w for _, w in wave])
            except Exception:  # the round trip failed: nothing is known of the wave
                for _, w in wave:
                    self.cache.after_write(w, "error")
                job.todo += [i for i, _ in wave] + [i for c in chains.values() for i, _ in c]
                raise
            for (inp, w), res in zip(wave, results, strict=True):
                self.cache.after_write(w, res.status)
                if res.status == "ok":
                    w.outbox_ids = res.outbox_ids
                    job.done.append((inp, w))
                    self._observe(inp, w)
                    continue
                if res.status == "duplicate":
                    self.metrics.duplicates += 1
                elif res.status == "refused":  # nothing written; a person must look
                    reason = (
                        f"saga {w.saga_id} remembers {SEEN_CAP} operator commands, the most it"
                        " keeps; this one is not applied"
                    )
                    job.poison.append(Poison(inp.record, "too_many_operator_commands", reason))
                else:  # "conflict", or "error": Redis refused this step (nothing written)
                    job.todo.append(inp)
                    failure = failure or res.error
                job.todo += [i for i, _ in chains.pop(w.saga_id, [])]
        if failure is not None:
            raise failure

    def _decide_chains(
        self, todo: list[Input], loaded: Loaded
    ) -> dict[str, list[tuple[Input, Write | Poison]]]:
        """Per saga, in input order, each input's write (decided on the state the saga's
        previous writes of the chain would leave) or its poison. A start for a saga whose keys
        expired (`gone`: its tombstone is there) is a duplicate start: counted, logged, and
        neither written nor dead-lettered."""
        raws, states, gone = loaded.raws, loaded.states, loaded.gone
        chains: dict[str, list[tuple[Input, Write | Poison]]] = {}
        now = int(time.time() * 1000)
        for inp in todo:
            sid = inp.message.saga_id
            chain = chains.setdefault(sid, [])
            if not raws[sid] and sid in gone and isinstance(inp.event, Start):
                self.metrics.duplicate_starts += 1
                log.info(
                    "start ignored: saga %s ran before and its keys expired (tombstone)",
                    sid,
                    extra=saga_extra(sid, inp.message.correlation_id or ""),
                )
                continue
            if raws[sid] and states[sid] is None:
                reason = "saga's type or version is not registered"
                chain.append((inp, Poison(inp.record, "unknown_saga_type", reason)))
                continue
            verdict = self._decide(inp, states[sid], now)
            chain.append((inp, verdict))
            if isinstance(verdict, Write):
                verdict.before_fields = raws[sid]
                if verdict.transition.outcome == "applied":
                    states[sid] = verdict.transition.state
                    raws[sid] = verdict.fields
        return chains

    def _decide(self, inp: Input, state: SagaState | None, now: int) -> Write | Poison:
        msg = inp.message
        inp.prev_updated_ms = state.updated_ms if state else 0  # ops: step latency
        definition = None
        if state is not None:
            definition = self.registry.version(state.saga_type, state.definition_version)
        try:
            t = decide(state, inp.event, now, self.registry, definition)
        except Exception as exc:  # a bug must not block the partition: dead-letter, loudly
            log.exception("decide failed", extra=saga_extra(msg.saga_id, msg.correlation_id or ""))
            return Poison(inp.record, type(exc).__name__, str(exc)[:500])
        if t.outcome == "rejected" or t.state is None:
            return Poison(inp.record, "rejected", t.note)
        d = definition or self.registry[t.state.saga_type]
        outbox = [
            command_record(t.state, c, msg.message_id, self.s.output_format, d) for c in t.commands
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
            outbox=outbox,
            event_name=type(msg).__name__,
            remember=(
                "start"
                if isinstance(inp.event, Start) and t.outcome == "applied"
                else "seen"
                if isinstance(inp.event, Operator)
                else ""
            ),
            fields=to_fields(t.state, d) if t.outcome == "applied" else {},
        )

    def _observe(self, inp: Input, w: Write) -> None:
        t = w.transition
        assert t.state is not None
        extra = saga_extra(w.saga_id, t.state.correlation_id) | log_extra(t.state.traceparent)
        log.info(t.note, extra=extra)
        self.metrics.observe(w.before_status, t, isinstance(inp.event, Start))
        if isinstance(inp.event, Start) and t.outcome == "ignored":
            self.metrics.duplicate_starts += 1  # recorded in the saga's history as ignored
        if isinstance(inp.event, Reply) and t.outcome == "applied" and inp.prev_updated_ms:
            # ops: step latency = time since the saga's previous transition (command sent)
            end = t.state.updated_ms
            self.metrics.observe_step_latency(max(0, end - inp.prev_updated_ms) / 1000)
            attrs = {"saga.id": w.saga_id, "saga.reply": inp.event.kind}
            record_step_span(t.state.traceparent, inp.event.step, inp.prev_updated_ms, end, attrs)

    async def commit(self, records: list[Record]) -> None:
        """Commit the batch's offsets, retrying what may clear (a coordinator moving, a
        timeout). Failing to commit never loses anything (the inputs are durable and a
        redelivery is deduplicated), so a commit that cannot succeed is logged and dropped."""
        assert self.consumer is not None
        consumer = self.consumer
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        try:
            await self._retrying(
                "commit offsets", lambda: consumer.commit(offsets), retry_on=is_transient
            )
        except Exception as exc:
            if is_commit_refused(exc):
                # The group rebalanced (or the partitions went meanwhile): the new owner
                # re-reads these inputs and the dedupe ids make that harmless.
                log.warning("commit failed after a rebalance: %s", exc)
            elif is_kafka_error(exc):
                log.error("commit failed and will not be retried: %s", exc)
            else:
                raise

    async def _retrying(
        self,
        what: str,
        op: Callable[[], Awaitable[T]],
        retry_on: Callable[[BaseException], bool] = retryable,
    ) -> T:
        """Retry an operation on infrastructure errors with capped exponential backoff; what
        keeps failing is shown in `/readyz` until it succeeds."""

        def failed(exc: BaseException) -> None:
            conflict = ("other", "conflict") if isinstance(exc, ConflictError) else None
            self.metrics.infra_error(exc, conflict)
            self.metrics.faults.failing("loop", exc)

        result = await retry(
            op,
            what=what,
            log=log,
            stop=self.stop_event,
            backoff=Backoff(max_s=self.s.infra_backoff_max_s),
            retry_on=retry_on,
            on_retry=failed,
        )
        self.metrics.faults.ok("loop")
        return result
