"""Duplicate starts on Kafka: recorded as ignored and counted, and a finished saga's id stays
taken after its keys expired (a small tombstone with its own retention)."""

from __future__ import annotations

import orjson
import pytest

from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from schemas.config import Settings
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant


def start_order(saga_id: str, message_id: str) -> bytes:
    item = {"productId": "sku-1", "quantity": 1}
    doc = {"sagaId": saga_id, "messageId": message_id, "command": "StartOrder",
           "customerId": "c1", "items": [item], "amount": "5.00"}  # fmt: skip
    return orjson.dumps(doc)


async def test_a_second_start_is_recorded_as_ignored_and_counted(
    settings: Settings, reader: SagaReader
) -> None:
    """A StartOrder for a saga that exists changes nothing; the history says so and
    saga_starts_duplicate_total counts it."""
    async with ScriptedParticipant(settings), running(settings) as orch:
        await produce(settings, settings.commands_topic, [(b"dup-1", start_order("dup-1", "m1"))])
        assert (await reader.wait_final(["dup-1"]))["dup-1"] == "completed"
        before = await reader.fields("dup-1")
        await produce(settings, settings.commands_topic, [(b"dup-1", start_order("dup-1", "m2"))])

        async def recorded() -> bool:
            return any(h["event"] == "StartOrder" and h["outcome"] == "ignored"
                       for h in await reader.history("dup-1"))  # fmt: skip

        await wait_for(recorded, 60, "the second start to be recorded as ignored")

        # The step writes the history in Redis before the daemon counts the answer, so the
        # counter is waited on too rather than read at once (CI caught that race).
        async def counted() -> bool:
            return orch.metrics.duplicate_starts == 1

        await wait_for(counted, 30, "saga_starts_duplicate_total to count the second start")
        assert await reader.fields("dup-1") == before


@pytest.mark.parametrize("tombstone_s", [3600, 0], ids=["tombstone", "no-tombstone-control"])
async def test_an_expired_sagas_id_stays_taken(
    settings: Settings, reader: SagaReader, tombstone_s: int
) -> None:
    """With retention 1 s the saga's keys expire; a late duplicate start is then refused by the
    tombstone. Without tombstones (the control) the same start runs the saga again."""
    sid = f"gone-{tombstone_s}"
    keys = Keys(settings.key_prefix)
    async with (
        ScriptedParticipant(settings),
        running(settings, retention_s=1, tombstone_retention_s=tombstone_s) as orch,
    ):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid, "a"))])
        assert (await reader.wait_final([sid]))[sid] == "completed"
        redis = redis_factory.client(settings, decode=True)
        try:

            async def expired() -> bool:
                return not await redis.exists(keys.saga(sid))

            await wait_for(expired, 30, "the finished saga's keys to expire")
            assert bool(await redis.exists(keys.tombstone(sid))) == (tombstone_s > 0)
            await produce(
                settings, settings.commands_topic, [(sid.encode(), start_order(sid, "b"))]
            )
            if tombstone_s:

                async def counted() -> bool:
                    return orch.metrics.duplicate_starts == 1

                await wait_for(counted, 60, "the late start to be counted as a duplicate")
                assert not await redis.exists(keys.saga(sid)), "the saga ran a second time"
            else:
                assert (await reader.wait_final([sid]))[sid] == "completed"
                assert orch.metrics.duplicate_starts == 0
        finally:
            await redis.aclose()
