"""Redis going away under a worker: commands wait (no reply, no dead letter, no crash) and are
handled once Redis is back; a stop during the outage commits nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlparse

import pytest

from participants.samples.order.workers import inventory, seed_stock, snapshot
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompleted
from tests.support.proxy import CuttableProxy

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("inventory")


@pytest.fixture
async def proxied(settings: Settings) -> AsyncIterator[tuple[Settings, CuttableProxy]]:
    url = urlparse(settings.redis_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 6379)
    await proxy.start()
    yield (
        settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{proxy.port}{url.path}"}),
        proxy,
    )
    await proxy.stop()


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def reserve(saga: str) -> SagaCommand:
    return command(saga, "inventory", "ReserveItems", "reserve_inventory", data=order({"A": 1}))


async def test_commands_wait_out_a_redis_outage(
    settings: Settings, proxied: tuple[Settings, CuttableProxy]
) -> None:
    """While Redis is unreachable nothing is replied or dead-lettered; after, each command is
    handled exactly once."""
    worker_settings, proxy = proxied
    await seed_stock(settings, {"A": 10})
    cmds = [reserve(f"o{i}") for i in range(5)]
    async with (
        TopicReader(settings, settings.events_topic) as events,
        running(worker_settings, inventory.build()) as worker,
    ):
        warm = reserve("o-warm")
        await produce(settings, [warm])
        await events.reply(warm.message_id)
        proxy.cut()
        await produce(settings, cmds)
        await until(lambda: worker.stats.infra_retries >= 3)
        assert not any(
            getattr(r.message, "saga_id", "") in {f"o{i}" for i in range(5)} for r in events.seen
        )
        proxy.restore()
        replies = await events.replies([c.message_id for c in cmds], timeout_s=60)
        assert all(isinstance(r, StepCompleted) for r in replies.values())
        assert worker.stats.errors == 0 and worker.stats.dead_lettered == 0
    assert (await snapshot(settings)).stock == {"A": 10 - 6}


async def test_stop_during_an_outage_commits_nothing(
    settings: Settings, proxied: tuple[Settings, CuttableProxy]
) -> None:
    """A stop while Redis is away exits promptly without committing; the next worker handles
    the commands."""
    worker_settings, proxy = proxied
    await seed_stock(settings, {"A": 10})
    cmd = reserve("z1")
    async with TopicReader(settings, settings.events_topic) as events:
        async with running(worker_settings, inventory.build()) as worker:
            warm = reserve("z-warm")
            await produce(settings, [warm])
            await events.reply(warm.message_id)
            proxy.cut()
            await produce(settings, [cmd])
            await until(lambda: worker.stats.infra_retries >= 1)
            stats = await worker.stop(timeout_s=15)
        assert stats.replies == 1
        proxy.restore()
        async with running(settings, inventory.build()):
            assert isinstance(await events.reply(cmd.message_id), StepCompleted)
    assert (await snapshot(settings)).stock == {"A": 8}
