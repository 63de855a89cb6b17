"""The outbox after a crash: commands the step wrote but nobody published (the process died
between the Redis write and the Kafka ack) are re-published by the relay, then deleted."""

from __future__ import annotations

import orjson

from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from schemas.config import Settings
from schemas.dlq import header
from tests.conftest import BOTH_REDIS
from tests.support.commands import read_commands
from tests.support.kafka import wait_for
from tests.support.orch import running

pytestmark = BOTH_REDIS  # the outbox is per partition on both


async def test_relay_republishes_what_a_crash_left_in_the_outbox(settings: Settings) -> None:
    """An outbox entry older than the sweep age is published with its key, value and headers,
    and removed from the outbox only after Kafka acked it."""
    keys = Keys.of(settings)
    outbox = keys.outbox_of(keys.partition("orphan-1"))  # the saga's partition's outbox
    redis = redis_factory.client(settings)
    value = b'{"messageType":"SagaCommand","note":"left behind by a crash"}'
    headers = [["saga-message-type", "SagaCommand"], ["saga-participant", "inventory"]]
    await redis.xadd(outbox, {"k": b"orphan-1", "v": value, "h": orjson.dumps(headers)})
    try:
        async with running(settings, outbox_sweep_age_s=0.2) as orch:

            async def drained() -> bool:
                return int(await redis.xlen(outbox)) == 0

            await wait_for(drained, 30, "the relay to empty the outbox")

            # the relay deletes the entry before it counts it: wait on the counter too
            async def counted() -> bool:
                return orch.metrics.outbox_republished == 1

            await wait_for(counted, 30, "saga_outbox_republished_total to count it")
        # to inventory's command topic (the commands topic in single mode), by its header
        records = await read_commands(settings, 1)
        assert [(r.key, r.value) for r in records] == [(b"orphan-1", value)]
        assert header(records[0].headers, "saga-participant") == "inventory"
    finally:
        await redis.aclose()
