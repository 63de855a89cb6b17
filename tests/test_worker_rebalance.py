"""A rebalance waits for the batch in progress (the workers on librdkafka, issue 12): a second
replica joining while the first is in the middle of a batch gets partitions only after that
batch is finished and committed, so no command runs on both replicas.

The first replica's handlers are held on a gate. The gate opens only once the group coordinator
says a rebalance is under way (`PreparingRebalance`, asked with the admin client): from then on,
a replica that gave its partitions away mid-batch would let the second one re-read the batch's
commands and run them again, which the exact count of handler runs below would show."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from infra import kafka
from participants.keys import group_id
from participants.sdk import Context, Participant, SagaCommand
from participants.testing import TopicReader, command, produce, running
from schemas.config import Settings
from schemas.messages import StepCompleted
from tests.support.kafka import wait_for

NAME = "gated"
pytestmark = pytest.mark.participant_topics(NAME)


def gated(gate: asyncio.Event, runs: Counter[str]) -> Participant:
    svc = Participant(NAME)

    @svc.action("Hold")
    async def hold(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        runs[cmd.message_id] += 1
        await gate.wait()
        return {"held": "1"}

    return svc


def group_state(admin: AdminClient, settings: Settings) -> ConsumerGroupState:
    [future] = admin.describe_consumer_groups([group_id(settings.key_prefix, NAME)]).values()
    state: ConsumerGroupState = future.result(timeout=30).state
    return state


async def test_a_joining_replica_waits_for_the_batch_in_progress(settings: Settings) -> None:
    gate = asyncio.Event()
    runs: Counter[str] = Counter()
    cmds = [command(f"rb-{i}", NAME, "Hold", "hold") for i in range(12)]
    admin = kafka.admin(settings)
    async with (
        TopicReader(settings, settings.events_topic) as events,
        running(settings, gated(gate, runs)) as first,
    ):

        async def first_joined() -> bool:
            return first.worker.joined

        await wait_for(first_joined, 90, "the first replica to join its group")
        await produce(settings, cmds)

        async def in_a_batch() -> bool:
            return sum(runs.values()) > 0

        await wait_for(in_a_batch, 90, "the first replica to start a batch")
        async with running(settings, gated(gate, runs)) as second:

            async def rebalancing() -> bool:
                state = await asyncio.to_thread(group_state, admin, settings)
                return state == ConsumerGroupState.PREPARING_REBALANCING

            await wait_for(rebalancing, 90, "the coordinator to start a rebalance")
            # the batch is held: nothing committed, nothing handed to the second replica
            assert first.stats.commits == 0 and not second.worker.joined
            gate.set()
            replies = await events.replies([c.message_id for c in cmds], timeout_s=90)

            async def second_joined() -> bool:
                return second.worker.joined

            await wait_for(second_joined, 90, "the second replica to get partitions")
            b = await second.stop()
        a = await first.stop()
    assert all(isinstance(r, StepCompleted) for r in replies.values())
    assert runs == dict.fromkeys((c.message_id for c in cmds), 1), runs  # each ran once
    assert a.commits >= 1 and b.replayed == 0  # the second never re-read the first's batch
    assert a.handled + b.handled == len(cmds)
