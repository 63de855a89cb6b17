"""A paused copy fires nothing after its partitions moved (real processes, Kafka and Redis).

Copy A owns every partition; it is paused (SIGSTOP) past its Kafka session, so copy B takes
the partitions over, in Kafka and in Redis (a higher epoch in each partition's `_owner`). B is
paused too, with a session long enough that the group waits for it for minutes, and due
timers are put into every partition. A resumes believing for a moment that it still owns its
partitions: its relay's fenced reads are refused (counted in `saga_relay_fenced_total`), so
the timers stay where they are and no TimerFired reaches the events topic.

Which of two guards stops A first is a race, and either is right: librdkafka notices on the
resume, by its own clock, that its session expired during the pause and revokes the
assignment (which drops the relay's partitions at once), while the relay's first round may
already be reading (which the fence refuses). So this test holds A to firing nothing, by
whichever guard; the fence alone, deterministically, is
`tests/test_relay_ownership.py::test_a_fenced_copy_fires_nothing_and_the_owner_fires` (the
real relay, Kafka and Redis, a copy whose token another copy superseded)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from aiokafka import TopicPartition

from infra import kafka
from infra import redis as redis_factory
from orchestrator.engine.keys import Keys, partition_of
from schemas.config import Settings
from tests.conftest import BOTH_REDIS
from tests.support.kafka import wait_for
from tests.support.procs import kill, start_orchestrator
from tests.test_engine_redis_faults import free_port
from tests.test_http import metric

pytestmark = BOTH_REDIS

#: A loses its partitions soon after its pause; B's pause keeps the group waiting for minutes
SHORT_SESSION_MS, LONG_SESSION_MS = 6_000, 300_000


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"http://127.0.0.1:{port}/metrics")).text


async def owners(settings: Settings) -> list[str]:
    keys = Keys.of(settings)
    redis = redis_factory.client(settings, decode=True)
    try:
        return [await redis.get(keys.owner(p)) or "" for p in keys.all_partitions()]
    finally:
        await redis.aclose()


async def records_in(settings: Settings, topic: str) -> int:
    """Records in a topic now (end minus start offsets): read, not waited for."""
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
    return sum(ends[tp] - starts[tp] for tp in tps)


def one_saga_per_partition(n: int) -> list[str]:
    ids: dict[int, str] = {}
    i = 0
    while len(ids) < n:
        sid = f"fence-{i}"
        ids.setdefault(partition_of(sid, n), sid)
        i += 1
    return [ids[p] for p in range(n)]


async def test_a_paused_copy_fires_nothing_after_its_partitions_moved(
    settings: Settings, tmp_path: Path
) -> None:
    n = settings.topic_partitions
    keys = Keys.of(settings)
    port_a, port_b = free_port(), free_port()
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    procs: list[subprocess.Popen[bytes]] = []

    def running(proc: subprocess.Popen[bytes], log: Path) -> None:
        assert proc.poll() is None, log.read_text()[-3000:]

    try:
        a = start_orchestrator(
            settings,
            log_a,
            SAGA_HTTP_PORT=str(port_a),
            SAGA_CONSUMER_SESSION_TIMEOUT_MS=str(SHORT_SESSION_MS),
        )
        procs.append(a)

        async def a_owns_all() -> bool:
            running(a, log_a)
            try:
                text = await scrape(port_a)
            except httpx.HTTPError:
                return False  # not listening yet
            return metric(text, "saga_relay_partitions", missing_ok=True) == n

        await wait_for(a_owns_all, 120, "copy A to take every partition", interval_s=0.2)
        a_tokens = await owners(settings)
        member_a = a_tokens[0].rsplit(":", 1)[0]
        assert all(t.startswith(member_a + ":") for t in a_tokens), a_tokens

        os.kill(a.pid, signal.SIGSTOP)
        b = start_orchestrator(
            settings,
            log_b,
            SAGA_HTTP_PORT=str(port_b),
            SAGA_CONSUMER_SESSION_TIMEOUT_MS=str(LONG_SESSION_MS),
        )
        procs.append(b)

        async def b_owns_all() -> bool:
            running(b, log_b)
            try:
                text = await scrape(port_b)
            except httpx.HTTPError:
                return False
            taken = not any(t.startswith(member_a + ":") for t in await owners(settings))
            return taken and metric(text, "saga_relay_partitions", missing_ok=True) == n

        await wait_for(b_owns_all, 180, "copy B to take every partition", interval_s=0.2)
        b_tokens = await owners(settings)
        os.kill(b.pid, signal.SIGSTOP)

        redis = redis_factory.client(settings)
        try:
            due = int(time.time() * 1000) - 1000
            members = [f"{sid}|timeout|reserve_inventory|1|a" for sid in one_saga_per_partition(n)]
            for m in members:
                await redis.zadd(keys.timers_of(keys.partition(m.split("|")[0])), {m: due})
            os.kill(a.pid, signal.SIGCONT)

            async def a_stopped_or_fired() -> bool:
                # fired is what a copy without either guard does: wait for either, then judge
                running(a, log_a)
                text = await scrape(port_a)
                fired = metric(text, "saga_timers_fired_total")
                return fired > 0 or metric(text, "saga_relay_partitions") == 0

            await wait_for(a_stopped_or_fired, 60, "copy A's relay to let its partitions go")
            text = await scrape(port_a)
            assert metric(text, "saga_timers_fired_total") == 0
            for m in members:
                key = keys.timers_of(keys.partition(m.split("|")[0]))
                assert await redis.zscore(key, m) == due, m  # still there, not fired
            assert await records_in(settings, settings.events_topic) == 0
            assert await owners(settings) == b_tokens  # the fence writes nothing
        finally:
            await redis.aclose()
    finally:
        for proc in procs:  # a stopped process dies on SIGKILL too
            if proc.poll() is None:
                kill(proc, signal.SIGKILL)
