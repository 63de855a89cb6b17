"""The baselines: a plain Kafka ping-pong with the cost of a saga step, through each client.

The asking side (in the bench process) keeps `chains` conversations going, like sagas in
flight; the answering side (a child process: `python -m scripts.bench_kit.pingpong CLIENT ...`)
consumes a batch, runs one Redis script per message (one pipelined round trip), produces every
reply, waits for the broker's acknowledgements and commits: the same order of durability as the
orchestrator's loop. Producers are idempotent with acks=all; messages are the size of a real
participant command. Only the client differs between the two runs:

- `aiokafka`: AIOKafkaConsumer / AIOKafkaProducer (what the engine uses today);
- `confluent`: confluent-kafka's synchronous Consumer / Producer (librdkafka).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition as AioPartition

from infra import kafka
from infra import redis as redis_factory
from schemas.config import Settings
from scripts.bench_kit.fleet import (
    BenchError,
    CpuWindow,
    child_env,
    per_unit_us,
    spawn,
    stack_pids,
    stop_all,
)
from scripts.bench_kit.load import order_data, pct

CLIENTS = ("aiokafka", "confluent")
#: the Redis work of one step on the answering side
PONG_LUA = "redis.call('HSET', KEYS[1], 'seen', ARGV[1]) return 1"
MAX_BATCH = 2000
#: a conversation without an answer for this long means the baseline is broken, not slow
STALL_S = 60.0


# ---- the answering side (a child process) ---------------------------------------------------


async def pong_aiokafka(topic_in: str, topic_out: str, prefix: str, linger_ms: int) -> None:
    s = Settings()
    redis = redis_factory.client(s)
    script = redis.register_script(PONG_LUA)
    consumer = kafka.consumer(s, topic_in, group_id=f"{prefix}-ponger")
    producer = kafka.producer(s, linger_ms=linger_ms)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with kafka.started(consumer), kafka.started(producer):
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=MAX_BATCH)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            async with redis.pipeline(transaction=False) as pipe:
                for r in records:
                    key = f"{prefix}:pong:{(r.key or b'').decode()}"
                    await script(keys=[key], args=[r.offset], client=pipe)
                await pipe.execute()
            futures = [await producer.send(topic_out, r.value, r.key) for r in records]
            await asyncio.gather(*futures)
            await consumer.commit()
    await redis.aclose()


def take(consumer: Any, timeout_s: float) -> list[Any]:
    """What has arrived, up to MAX_BATCH, waiting only while nothing has: `consume(n, t)` alone
    would wait for all n records or the whole timeout."""
    first = consumer.poll(timeout_s)
    return [] if first is None else [first, *consumer.consume(MAX_BATCH - 1, 0)]


def pong_confluent(topic_in: str, topic_out: str, prefix: str, linger_ms: int) -> None:
    s = Settings()
    redis = redis_factory.sync_client(s)
    script = redis.register_script(PONG_LUA)
    consumer = kafka.sync_consumer(s, f"{prefix}-ponger")
    producer = kafka.sync_producer(s, **{"enable.idempotence": True, "linger.ms": linger_ms})
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    consumer.subscribe([topic_in])
    while not stopping:
        msgs = [m for m in take(consumer, 0.1) if m.error() is None]
        if not msgs:
            continue
        with redis.pipeline(transaction=False) as pipe:
            for m in msgs:
                key = f"{prefix}:pong:{(m.key() or b'').decode()}"
                script(keys=[key], args=[m.offset() or 0], client=pipe)
            pipe.execute()
        for m in msgs:
            producer.produce(topic_out, m.value(), m.key())
        producer.flush()
        consumer.commit(asynchronous=False)
    consumer.close()
    redis.close()


# ---- the asking side (the bench process) ----------------------------------------------------


@dataclass
class Chains:
    """`n` conversations: each answer is timed and, until the window ends, asked again.

    Steps are counted in the measurement window (after `warm_s`), which ends after `measure_s`
    or, with `max_steps`, once that many steps were measured."""

    n: int
    run: str
    warm_s: float
    measure_s: float
    max_steps: int | None = None
    sent_at: dict[bytes, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    total: int = 0
    measured_from: float = 0.0
    measured_to: float = 0.0
    last_answer: float = 0.0

    def conversations(self) -> list[bytes]:
        return [f"{self.run}-{i}".encode() for i in range(self.n)]

    def begin(self, now: float) -> None:
        self.measured_from = now + self.warm_s
        self.measured_to = self.measured_from + self.measure_s if self.max_steps is None else 1e18
        self.last_answer = now

    def answered(self, key: bytes | None, now: float) -> bool:
        """Records an answer; True when the conversation goes on (send `key` again)."""
        if key is None or key not in self.sent_at:
            return False  # a late answer to an earlier run on the same topic
        rtt = now - self.sent_at.pop(key)
        self.total += 1
        self.last_answer = now
        if self.measured_from <= now < self.measured_to:
            self.latencies.append(rtt)
            if self.max_steps is not None and len(self.latencies) >= self.max_steps:
                self.measured_to = now
        return now < self.measured_to

    def over(self, now: float) -> bool:
        if now - self.last_answer > STALL_S:
            raise BenchError(f"ping-pong: no answer for {STALL_S:g} s")
        return now >= self.measured_to

    def result(self) -> dict[str, Any]:
        span = self.measured_to - self.measured_from
        p50, p99 = pct(self.latencies, 50), pct(self.latencies, 99)
        return {
            "steps_per_s": len(self.latencies) / span if span > 0 else None,
            "rtt_p50_ms": p50 * 1000 if p50 is not None else None,
            "rtt_p99_ms": p99 * 1000 if p99 is not None else None,
            "measured_s": round(span, 2),
            "steps": len(self.latencies),
        }


async def ping_aiokafka(
    s: Settings, topic_out: str, topic_in: str, chains: Chains, partitions: int, linger_ms: int
) -> Chains:
    consumer = kafka.consumer(s, group_id=None)
    producer = kafka.producer(s, linger_ms=linger_ms)
    async with kafka.started(consumer), kafka.started(producer):
        parts = [AioPartition(topic_in, p) for p in range(partitions)]
        consumer.assign(parts)
        for tp, offset in (await consumer.end_offsets(parts)).items():
            consumer.seek(tp, offset)  # exactly where the answers to this run will start
        chains.begin(time.perf_counter())
        for key in chains.conversations():
            chains.sent_at[key] = time.perf_counter()
            await producer.send(topic_out, VALUE, key)
        while not chains.over(time.perf_counter()):
            batch = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
            for records in batch.values():
                for r in records:
                    if chains.answered(r.key, time.perf_counter()):
                        chains.sent_at[r.key] = time.perf_counter()
                        await producer.send(topic_out, VALUE, r.key)
    return chains


def ping_confluent(
    s: Settings, topic_out: str, topic_in: str, chains: Chains, partitions: int, linger_ms: int
) -> Chains:
    from confluent_kafka import TopicPartition

    consumer = kafka.sync_consumer(s, f"{chains.run}-pinger")  # assigned, never committed
    producer = kafka.sync_producer(s, **{"enable.idempotence": True, "linger.ms": linger_ms})
    try:
        parts = [TopicPartition(topic_in, p, end_offset(consumer, topic_in, p))
                 for p in range(partitions)]  # fmt: skip
        consumer.assign(parts)
        chains.begin(time.perf_counter())
        for first in chains.conversations():
            chains.sent_at[first] = time.perf_counter()
            producer.produce(topic_out, VALUE, first)
        producer.poll(0)
        while not chains.over(time.perf_counter()):
            for m in take(consumer, 0.2):
                key = m.key()
                if m.error() is None and key and chains.answered(key, time.perf_counter()):
                    chains.sent_at[key] = time.perf_counter()
                    producer.produce(topic_out, VALUE, key)
            producer.poll(0)
        producer.flush(30)
    finally:
        consumer.close()
    return chains


def end_offset(consumer: Any, topic: str, partition: int, timeout_s: float = 60) -> int:
    """The partition's high watermark; a new topic's leader may take a moment to serve it."""
    from confluent_kafka import KafkaException, TopicPartition

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            return int(high)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # bounded by the deadline: the broker is electing the leader


def _sample_command() -> bytes:
    """A typical participant command (the order saga's second step), to size the messages."""
    from participants.samples.order.saga import ORDER_FULFILLMENT
    from schemas import codec
    from schemas.messages import SagaCommand

    first, second = ORDER_FULFILLMENT.steps[:2]
    sid = "bench00000001"
    cmd = SagaCommand(
        message_id=f"{sid}:{second.name}:action:1",
        saga_id=sid,
        correlation_id=sid,
        causation_id=f"{sid}:{first.name}:action:1:reply",
        participant=second.participant,
        command_type=second.action,
        step=second.name,
        attempt=1,
        data=order_data(sid),
    )
    return codec.encode(cmd)


VALUE = _sample_command()


async def baseline(
    s: Settings,
    client: str,
    tag: str,
    chains: int,
    warm_s: float,
    measure_s: float,
    max_steps: int | None,
    partitions: int,
    linger_ms: int,
    logdir: Path,
) -> dict[str, Any]:
    """One client's ping-pong on its own two topics: steps/s, round trips, CPU per step."""
    t_out, t_in = f"bench-{tag}-{client}-ping", f"bench-{tag}-{client}-pong"
    kafka.create_topics(s, [t_out, t_in], partitions)
    ponger = spawn(
        [sys.executable, "-m", "scripts.bench_kit.pingpong", client, t_out, t_in, f"bench{tag}b",
         str(linger_ms)],
        child_env(s),
        logdir / f"ponger-{client}.log",
    )  # fmt: skip
    redis = redis_factory.client(s)
    try:
        # a first exchange, untimed: the answering side has joined its group after it
        warm = Chains(10, f"w{tag}", 0.0, 0.0, max_steps=10)
        measured = Chains(chains, f"m{tag}", warm_s, measure_s, max_steps)
        args = (s, t_out, t_in)
        if client == "aiokafka":
            await ping_aiokafka(*args, warm, partitions, linger_ms)
            cpu = CpuWindow.begin({"pinger": os.getpid(), "ponger": ponger.pid, **stack_pids(s)})
            await ping_aiokafka(*args, measured, partitions, linger_ms)
        else:
            await asyncio.to_thread(ping_confluent, *args, warm, partitions, linger_ms)
            cpu = CpuWindow.begin({"pinger": os.getpid(), "ponger": ponger.pid, **stack_pids(s)})
            await asyncio.to_thread(ping_confluent, *args, measured, partitions, linger_ms)
        cpu_s = cpu.end()
        return measured.result() | {
            "cpu_s_per_process": cpu_s,
            "cpu_us_per_step": per_unit_us(cpu_s, measured.total),
        }
    finally:
        stop_all([ponger])
        async for key in redis.scan_iter(match=f"bench{tag}b:pong:*", count=1000):
            await redis.unlink(key)
        await redis.aclose()
        kafka.delete_topics(s, [t_out, t_in])


if __name__ == "__main__":
    which, topic_in, topic_out, prefix, linger = sys.argv[1:6]
    if which == "aiokafka":
        asyncio.run(pong_aiokafka(topic_in, topic_out, prefix, int(linger)))
    else:
        pong_confluent(topic_in, topic_out, prefix, int(linger))
