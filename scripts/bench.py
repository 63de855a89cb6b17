"""End-to-end benchmark: order sagas per second and step latency, next to a baseline measured
in the same run (a plain Kafka ping-pong through the same client, same message size, one Redis
round trip per step). Every process runs on this machine; compare the ratio, not the absolutes.

Usage: scripts/bench [--sagas N] [--pings N] [--chains N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra import kafka  # noqa: E402
from infra import redis as redis_factory  # noqa: E402
from orchestrator.engine import history as saga_history  # noqa: E402
from orchestrator.engine.keys import Keys  # noqa: E402
from orchestrator.engine.statecodec import from_iso  # noqa: E402
from participants.samples.order.saga import ORDER_FULFILLMENT  # noqa: E402
from schemas import codec  # noqa: E402
from schemas.config import Settings  # noqa: E402
from schemas.messages import SagaCommand  # noqa: E402

STEPS_PER_SAGA = 4


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def sample_command() -> bytes:
    """A typical participant command (the order saga's second step), to size the baseline's
    messages the same."""
    first, second = ORDER_FULFILLMENT.steps[:2]
    cmd = SagaCommand(
        message_id=f"bench-000001:{second.name}:action:1",
        saga_id="bench-000001",
        correlation_id="bench-000001",
        causation_id=f"bench-000001:{first.name}:action:1:reply",
        participant=second.participant,
        command_type=second.action,
        step=second.name,
        attempt=1,
        data=order_doc("bench-000001"),
    )
    return codec.encode(cmd)


def order_doc(saga_id: str) -> dict[str, Any]:
    return {
        "orderId": saga_id,
        "customerId": "cust-1",
        "items": [{"productId": "sku-1", "quantity": 1}, {"productId": "sku-2", "quantity": 2}],
        "amount": "42.50",
        "currency": "USD",
        "paymentMethod": "card",
        "shippingAddress": "1 Main St, Springfield",
    }


# ---- baseline: ping-pong -------------------------------------------------------------------


async def ponger(topic_in: str, topic_out: str, prefix: str) -> None:
    """The participant's side of the baseline: consume, one Redis write per message, reply."""
    s = Settings()
    redis = redis_factory.client(s)
    consumer = kafka.consumer(s, topic_in, group_id=f"{prefix}-ponger")
    producer = kafka.producer(s)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=100, max_records=2000)
        records = [r for rs in batch.values() for r in rs]
        if not records:
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for r in records:
                pipe.hset(f"{prefix}:pong:{r.key.decode()}", "seen", r.offset)
            await pipe.execute()
        futures = [await producer.send(topic_out, r.value, r.key) for r in records]
        await asyncio.gather(*futures)
        await consumer.commit()
    await consumer.stop()
    await producer.stop()


async def pinger(
    s: Settings, topic_out: str, topic_in: str, chains: int, rounds: int, value: bytes
) -> dict[str, float]:
    """`chains` concurrent conversations of `rounds` round trips each, like sagas of 4 steps."""
    consumer = kafka.consumer(s, topic_in, group_id=None, auto_offset_reset="latest")
    producer = kafka.producer(s)
    await consumer.start()
    await producer.start()
    await consumer.getmany(timeout_ms=500)
    await consumer.seek_to_end()
    left = {f"c{i}": rounds for i in range(chains)}
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    start = time.perf_counter()
    for key in left:
        sent_at[key] = time.perf_counter()
        await producer.send(topic_out, value, key.encode())
    done = 0
    while done < chains:
        batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
        now = time.perf_counter()
        for rs in batch.values():
            for r in rs:
                key = r.key.decode()
                latencies.append(now - sent_at[key])
                left[key] -= 1
                if left[key] == 0:
                    done += 1
                    continue
                sent_at[key] = time.perf_counter()
                await producer.send(topic_out, value, r.key)
    elapsed = time.perf_counter() - start
    await consumer.stop()
    await producer.stop()
    return {
        "steps_per_s": chains * rounds / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "elapsed_s": elapsed,
    }


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT
    )


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)


async def baseline(
    s: Settings, tag: str, chains: int, pings: int, logdir: Path
) -> dict[str, float]:
    t_out, t_in = f"bench-{tag}-ping", f"bench-{tag}-pong"
    kafka.create_topics(s, [t_out, t_in], 6)
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        SAGA_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap_servers,
        SAGA_REDIS_URL=s.redis_url,
    )
    proc = spawn(
        [sys.executable, __file__, "_ponger", t_out, t_in, f"bench{tag}"],
        env,
        logdir / "ponger.log",
    )
    try:
        # warm-up round so group join and metadata are not timed
        await pinger(s, t_out, t_in, 10, 1, sample_command())
        return await pinger(s, t_out, t_in, chains, pings // chains, sample_command())
    finally:
        stop_all([proc])


# ---- the orchestrator ----------------------------------------------------------------------


async def orchestrated(s: Settings, tag: str, n: int, logdir: Path) -> dict[str, float]:
    topics = {k: f"bench-{tag}-{k}" for k in ("commands", "events", "dlq")}
    kafka.create_topics(s, list(topics.values()), 6)
    prefix = f"bench{tag}"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        SAGA_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap_servers,
        SAGA_REDIS_URL=s.redis_url,
        SAGA_COMMANDS_TOPIC=topics["commands"],
        SAGA_EVENTS_TOPIC=topics["events"],
        SAGA_DLQ_TOPIC=topics["dlq"],
        SAGA_KEY_PREFIX=prefix,
        SAGA_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    )
    saga = [sys.executable, "-m", "orchestrator.ops.cli"]
    redis = redis_factory.client(s, decode=True)
    await redis.hset(
        f"{prefix}:inventory:stock", mapping={"sku-1": 10_000_000, "sku-2": 10_000_000}
    )
    procs = [spawn([*saga, "orchestrator", "run"], env, logdir / "orchestrator.log")]
    for name in ("inventory", "payment", "shipping", "notification"):
        procs.append(spawn([*saga, "participant", "run", name], env, logdir / f"{name}.log"))
    keys = Keys(prefix)
    try:
        producer = kafka.producer(s, linger_ms=5)
        await producer.start()
        # warm-up: a few sagas so every process has joined its group before timing starts
        warm = [f"warm-{i}" for i in range(20)]
        for sid in warm:
            await producer.send(topics["commands"], start_value(sid), sid.encode())
        await wait_count(redis, keys, len(warm), 180)
        ids = [f"o{i:07d}" for i in range(n)]
        t0 = time.time()
        futures = [
            await producer.send(topics["commands"], start_value(sid), sid.encode()) for sid in ids
        ]
        await asyncio.gather(*futures)
        produced_s = time.time() - t0
        await producer.stop()
        await wait_count(redis, keys, len(warm) + n, 600)
        created, updated, steps, mem = [], [], [], []
        for sid in ids:
            f = await redis.hmget(keys.saga(sid), "created_at", "updated_at")
            created.append(from_iso(f[0]) / 1000)
            updated.append(from_iso(f[1]) / 1000)
        for sid in ids[:: max(1, n // 500)]:
            hist = await saga_history.read(redis, keys.history(sid))
            ats = [from_iso(h["at"]) for h in hist if h["outcome"] == "applied"]
            steps += [(b - a) for a, b in itertools.pairwise(ats)]
            total = 0
            for k in keys.owned(sid).values():
                total += int(await redis.memory_usage(k, samples=0) or 0)
            mem.append(total)
        elapsed = max(updated) - min(created)
        names = ["orchestrator", "inventory", "payment", "shipping", "notification"]
        cpu = {name: cpu_seconds(p.pid) for name, p in zip(names, procs, strict=True)}
        print(f"cpu seconds per process over the run: {cpu}", flush=True)
        return {
            "sagas": n,
            "sagas_per_s": n / elapsed,
            "steps_per_s": n * STEPS_PER_SAGA / elapsed,
            "step_p50_ms": pct(steps, 50),
            "step_p99_ms": pct(steps, 99),
            "saga_p50_ms": pct([(u - c) * 1000 for c, u in zip(created, updated, strict=True)], 50),
            "saga_p99_ms": pct([(u - c) * 1000 for c, u in zip(created, updated, strict=True)], 99),
            "produce_s": produced_s,
            "bytes_per_saga": statistics.mean(mem),
        }
    finally:
        stop_all(procs)
        await cleanup(redis, prefix)
        await redis.aclose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc), to see who is the bottleneck."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def start_value(sid: str) -> bytes:
    doc = {"sagaId": sid, "command": "StartOrder", **order_doc(sid)}
    doc["items"] = [{"productId": "sku-1", "quantity": 1}, {"productId": "sku-2", "quantity": 2}]
    return orjson.dumps(doc)


async def wait_count(redis: Redis, keys: Keys, n: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while (done := await redis.zcard(keys.index("completed"))) < n:
        if time.time() > deadline:
            failed = await redis.zcard(keys.index("failed"))
            raise SystemExit(
                f"bench: only {done}/{n} sagas completed ({failed} failed) in {timeout_s}s"
            )
        await asyncio.sleep(0.2)


async def cleanup(redis: Redis, prefix: str) -> None:
    batch: list[str] = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sagas", type=int, default=5000)
    ap.add_argument("--pings", type=int, default=20000)
    ap.add_argument("--chains", type=int, default=1000)
    ap.add_argument("--codec-n", type=int, default=5000)
    a = ap.parse_args()
    s = Settings()
    tag = uuid.uuid4().hex[:6]
    logdir = ROOT / ".stack" / "bench" / tag
    logdir.mkdir(parents=True, exist_ok=True)
    from schemas.bench import bench_decode

    print(f"# bench run {tag} on {os.cpu_count()} cores; logs in {logdir}")
    codec_us = bench_decode(a.codec_n)
    base = await baseline(s, tag, a.chains, a.pings, logdir)
    print(f"baseline: {base}", flush=True)
    orch = await orchestrated(s, tag, a.sagas, logdir)
    print("\n## decode and validate, microseconds per message")
    for k, v in codec_us.items():
        print(f"- {k}: {v:.1f}")
    print("\n## baseline: aiokafka ping-pong + one Redis round trip per step")
    b, o = base, orch
    print(f"- steps/s: {b['steps_per_s']:.0f}  p50 {b['p50_ms']:.1f} ms  p99 {b['p99_ms']:.1f} ms")
    print("\n## orchestrator: order sagas (4 steps) with the four sample workers")
    print(
        f"- sagas: {o['sagas']}  sagas/s: {o['sagas_per_s']:.0f}  steps/s: {o['steps_per_s']:.0f}"
    )
    print(f"- step latency p50 {orch['step_p50_ms']:.0f} ms  p99 {orch['step_p99_ms']:.0f} ms")
    print(f"- saga latency p50 {orch['saga_p50_ms']:.0f} ms  p99 {orch['saga_p99_ms']:.0f} ms")
    print(f"- Redis bytes per completed saga (its own keys): {orch['bytes_per_saga']:.0f}")
    ratio = orch["steps_per_s"] / base["steps_per_s"]
    print(f"\n## ratio: orchestrator steps/s / baseline steps/s = {ratio:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_ponger":
        asyncio.run(ponger(*sys.argv[2:5]))
    else:
        asyncio.run(main())
