"""A worker started before its command topic exists (the orchestrator creates participant topics
at its own start) waits for the topic and takes its first command as soon as the topic is
created, not at the consumer's next metadata refresh (30 s); a stop while it waits ends it cleanly.

The reply deadline (15 s) is under that refresh period, so a worker that subscribed at once to
the missing topic could not pass: a condition with a deadline, not a timed assertion."""

from __future__ import annotations

import asyncio
import logging

import pytest

from infra import kafka
from participants.examples.loyalty import svc
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import StepCompleted
from tests.support.kafka import wait_for


async def test_a_worker_waits_for_its_topic_then_takes_commands_at_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = settings.command_topic_of("loyalty")
    caplog.set_level(logging.WARNING)
    award = command(
        "W1", "loyalty", "AwardPoints", "award_points", data=order(amount="10", customer_id="bo")
    )
    async with TopicReader(settings, settings.events_topic) as events, running(settings, svc):

        async def told() -> bool:
            return any(f"waiting for {topic}" in r.getMessage() for r in caplog.records)

        await wait_for(told, 30, "the worker to say it waits for its topic")
        await asyncio.to_thread(kafka.create_topics, settings, [topic], settings.topic_partitions)
        await produce(settings, [award])
        replies = await events.replies([award.message_id], timeout_s=15)
        assert isinstance(replies[award.message_id], StepCompleted)


async def test_a_stop_while_waiting_for_the_topic_ends_the_worker(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running(settings, svc) as worker:

        async def waiting() -> bool:
            return any("waiting for" in r.getMessage() for r in caplog.records)

        await wait_for(waiting, 30, "the worker to wait for its topic")
        stats = await worker.stop(timeout_s=30)  # TimeoutError if the wait ignored the stop
    assert stats.handled == 0
