"""A worker on a Redis full under noeviction (OOM): commands wait (no reply, no dead letter, no
crash) and each is handled exactly once after memory is freed. (The participants' own code; a
test of the same fault the orchestrator's tests fill Redis for.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aredis

from participants.samples.order.workers import inventory, seed_stock, snapshot
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompleted
from tests.support.kafka import wait_for
from tests.test_engine_redis_faults import MAXMEMORY, fill_to_oom, free, on_port, redis_server

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("inventory")


def reserve(saga: str) -> SagaCommand:
    return command(saga, "inventory", "ReserveItems", "reserve_inventory", data=order({"A": 1}))


async def test_a_worker_waits_out_oom_and_applies_each_command_once(
    settings: Settings, tmp_path: Path
) -> None:
    """Fill the worker's Redis to OOM: commands get no reply and nothing is dead-lettered while
    the worker retries; once memory is freed every command is replied once and the stock is
    exact."""
    async with redis_server(
        tmp_path, "--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction"
    ) as port:
        small = on_port(settings, port)
        await seed_stock(small, {"A": 10})
        filler = aredis.Redis(port=port)
        cmds = [reserve(f"w-oom-{i}") for i in range(5)]
        try:
            async with (
                TopicReader(settings, settings.events_topic) as events,
                running(small, inventory.build()) as worker,
            ):
                warm = reserve("w-oom-warm")
                await produce(settings, [warm])
                await events.reply(warm.message_id)
                n = await fill_to_oom(filler)
                await produce(settings, cmds)

                async def retrying() -> bool:
                    return worker.stats.infra_retries >= 3

                await wait_for(retrying, 30, "the worker to meet OOM and retry it")
                waiting = {c.saga_id for c in cmds}
                assert not any(getattr(r.message, "saga_id", "") in waiting for r in events.seen)
                await free(filler, n)
                replies = await events.replies([c.message_id for c in cmds], timeout_s=60)
                assert all(isinstance(r, StepCompleted) for r in replies.values())
                assert worker.stats.errors == 0 and worker.stats.dead_lettered == 0
            assert (await snapshot(small)).stock == {"A": 10 - 6}
        finally:
            await filler.aclose()
