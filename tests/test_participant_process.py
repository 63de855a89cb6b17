"""`saga participant run inventory` as a real process: SIGKILL mid-stream applies no effect twice;
SIGTERM finishes the batch, commits, and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from infra import redis as redis_factory
from participants.keys import SdkKeys, group_id
from participants.samples.faults import inject as faults
from participants.samples.order.workers import seed_stock, snapshot
from participants.testing import TopicReader, command, order, produce
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompensated, StepCompleted
from tests.conftest import BOTH_REDIS
from tests.support.offsets import committed_and_ends

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [BOTH_REDIS, pytest.mark.participant_topics("inventory")]

SAGA = Path(sys.executable).parent / "saga"
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def worker_process(
    settings: Settings, log: Path, **extra_env: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SAGA_REDIS_URL": settings.redis_url,
        "SAGA_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "SAGA_COMMANDS_TOPIC": settings.commands_topic,
        "SAGA_EVENTS_TOPIC": settings.events_topic,
        "SAGA_DLQ_TOPIC": settings.dlq_topic,
        "SAGA_KEY_PREFIX": settings.key_prefix,
        **extra_env,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(SAGA), "participant", "run", "inventory"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


async def exit_code(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} still running after {timeout_s}s")
        await asyncio.sleep(0.05)
    return proc.returncode


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = redis_factory.client(settings, decode=True)
    yield client
    await client.aclose()


def reserve(saga: str, step: str = "reserve_inventory") -> SagaCommand:
    return command(saga, "inventory", "ReserveItems", step, data=order({"A": 1, "B": 2}))


def release(saga: str) -> SagaCommand:
    return command(
        saga,
        "inventory",
        "ReleaseReservation",
        "reserve_inventory",
        compensation=True,
        data=order(),
    )


@pytest.mark.slow
async def test_sigkill_mid_stream_applies_nothing_twice(
    settings: Settings, events: TopicReader, redis: Redis, tmp_path: Path
) -> None:
    """Kill -9 while commands are in flight, restart, re-deliver everything: the stock is
    exactly what 100 live reservations leave, and every command's replies are identical."""
    await seed_stock(settings, {"A": 1000, "B": 1000})
    # Small batches and some latency, so the kill lands while work is in flight.
    await faults.latency(redis, SdkKeys(settings.key_prefix, "inventory"), 20, compensations=True)
    cmds = [reserve(f"k{i}") for i in range(150)] + [release(f"k{i}") for i in range(50)]
    await produce(settings, cmds)
    ids = [c.message_id for c in cmds]

    log = tmp_path / "worker.log"
    with worker_process(settings, log, SAGA_PARTICIPANT_MAX_BATCH="5") as proc:
        await events.until(lambda seen: len(seen) >= 40, timeout_s=60)
        os.kill(proc.pid, signal.SIGKILL)
        assert await exit_code(proc) == -signal.SIGKILL
    answered = {getattr(r.message, "command_id", None) for r in events.seen}
    assert len(answered) < len(cmds), "the worker finished before the kill; the test proved nothing"

    await produce(settings, cmds)  # and everything once more, as duplicates
    with worker_process(settings, log) as proc:
        await events.until(
            lambda _: all(len(events.replies_to(i)) >= 2 for i in ids), timeout_s=120
        )
        os.kill(proc.pid, signal.SIGTERM)
        assert await exit_code(proc) == 0, log.read_text()[-3000:]

    for i in ids:
        first, *again = events.replies_to(i)
        assert all(r == first for r in again), i
    assert all(isinstance(events.replies_to(c.message_id)[0], StepCompleted) for c in cmds[:150])
    assert all(isinstance(events.replies_to(c.message_id)[0], StepCompensated) for c in cmds[150:])
    ledgers = await snapshot(settings)
    assert ledgers.stock == {"A": 1000 - 100, "B": 1000 - 200}
    assert ledgers.reserved == {"A": 100, "B": 200}
    statuses = {saga: r["status"] for saga, r in ledgers.reservations.items()}
    assert statuses == {f"k{i}": ("released" if i < 50 else "reserved") for i in range(150)}


async def committed_offsets(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """(committed, end) offsets per partition of the inventory group's command topic (its own
    in per-participant mode, auto-created by the first command with the broker's partition
    count; the commands topic in single mode)."""
    group = group_id(settings.key_prefix, "inventory")
    own = settings.command_topic_of("inventory")
    committed, ends = await committed_and_ends(settings, group, [own])
    return (
        {p: max(off, 0) for (_, p), off in committed.items()},  # never committed: 0
        {p: off for (_, p), off in ends.items()},
    )


@pytest.mark.slow
async def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    settings: Settings, events: TopicReader, redis: Redis, tmp_path: Path
) -> None:
    """SIGTERM while a batch is in progress: it is finished and answered, its offsets are
    committed, the process exits 0."""
    await seed_stock(settings, {"A": 100, "B": 100})
    keys = SdkKeys(settings.key_prefix, "inventory")
    # The first command takes the fail-next unit before sleeping out its latency: the
    # counter reaching 0 says the batch is in progress.
    await faults.fail_next(redis, keys, 1)
    await faults.latency(redis, keys, 300)
    cmds = [reserve("t1", step=f"step{i}") for i in range(5)]  # one saga: one partition, in order
    log = tmp_path / "worker.log"
    with worker_process(settings, log) as proc:
        await produce(settings, cmds)
        deadline = time.monotonic() + 60
        while (await faults.show(redis, keys)).get("fail_next") != "0":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)
        assert await exit_code(proc) == 0, log.read_text()[-3000:]
    await events.replies([c.message_id for c in cmds], timeout_s=10)
    committed, ends = await committed_offsets(settings)
    assert committed == ends
