"""The README's example participant (participants/examples/loyalty.py), end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from participants.examples.loyalty import svc
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import StepCompensated, StepCompleted, StepFailed

# the worker's command topic exists before it starts, as in a deployment
pytestmark = pytest.mark.participant_topics("loyalty")


def test_example_is_short() -> None:
    """The example stays under 30 lines, as the README promises."""
    import participants.examples.loyalty as module

    assert len(Path(module.__file__ or "").read_text().splitlines()) < 30


async def test_loyalty_awards_and_revokes_points(settings: Settings) -> None:
    """Award once (despite a duplicate), revoke exactly what was awarded, refuse a bad order."""
    award = command(
        "L1",
        "loyalty",
        "AwardPoints",
        "award_points",
        data=order(amount="120.75", customer_id="ann"),
    )
    revoke = command(
        "L1",
        "loyalty",
        "RevokePoints",
        "award_points",
        compensation=True,
        data=order(customer_id="ann"),
    )
    other = command(
        "L2", "loyalty", "AwardPoints", "award_points", data=order(amount="30", customer_id="ann")
    )
    nobody = command("L3", "loyalty", "AwardPoints", "award_points", data=order(customer_id=""))
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    points = f"{settings.key_prefix}:loyalty:points"
    async with TopicReader(settings, settings.events_topic) as events, running(settings, svc):
        await produce(settings, [award, award, other, nobody])
        replies = await events.replies([award.message_id, other.message_id, nobody.message_id])
        assert isinstance(replies[award.message_id], StepCompleted)
        assert replies[award.message_id].result == {"points": "120"}
        assert await redis.hget(points, "ann") == "150"
        bad = replies[nobody.message_id]
        assert isinstance(bad, StepFailed) and not bad.retryable

        await produce(settings, [revoke, revoke])
        await events.until(lambda _: len(events.replies_to(revoke.message_id)) == 2)
        assert all(isinstance(r, StepCompensated) for r in events.replies_to(revoke.message_id))
    assert await redis.hget(points, "ann") == "30"
    await redis.aclose()
