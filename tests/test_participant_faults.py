"""Failure injection at run time: fail-next, fail-rate, latency, no-reply, clear."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from infra import redis as redis_factory
from participants.keys import SdkKeys
from participants.samples.faults import inject as faults
from participants.samples.order.workers import payment, snapshot
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompensated, StepCompleted, StepFailed
from tests.conftest import BOTH_REDIS

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [BOTH_REDIS, pytest.mark.participant_topics("payment")]


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = redis_factory.client(settings, decode=True)
    yield client
    await client.aclose()


def keys(settings: Settings) -> SdkKeys:
    return SdkKeys(settings.key_prefix, "payment")


def charge(saga: str, attempt: int = 1) -> SagaCommand:
    return command(
        saga, "payment", "ProcessPayment", "process_payment", attempt=attempt, data=order()
    )


def refund(saga: str) -> SagaCommand:
    return command(
        saga, "payment", "RefundPayment", "process_payment", compensation=True, data=order()
    )


@pytest.mark.parametrize("retryable", [True, False])
async def test_fail_next_fails_exactly_count_commands(
    settings: Settings, events: TopicReader, redis: Redis, retryable: bool
) -> None:
    """fail-next 2: two failures with the chosen retryable flag, then normal service; the
    failed commands charged nothing."""
    await faults.fail_next(redis, keys(settings), 2, retryable=retryable)
    cmds = [charge("f1"), charge("f1", attempt=2), charge("f1", attempt=3)]
    async with running(settings, payment.build()):
        await produce(settings, cmds)
        r = await events.replies([c.message_id for c in cmds])
    first, second, third = (r[c.message_id] for c in cmds)
    assert (
        isinstance(first, StepFailed)
        and first.retryable is retryable
        and "fail-next" in first.reason
    )
    assert isinstance(second, StepFailed)
    assert isinstance(third, StepCompleted)
    assert [e["type"] for e in (await snapshot(settings)).payments] == ["charge"]
    assert (await faults.show(redis, keys(settings)))["fail_next"] == "0"


async def test_failures_skip_compensations_unless_asked(
    settings: Settings, events: TopicReader, redis: Redis
) -> None:
    """By default a compensation is not failed; with compensations=True it is."""
    await faults.fail_next(redis, keys(settings), 1)
    async with running(settings, payment.build()):
        r1 = refund("f2")
        await produce(settings, [r1])
        assert isinstance(await events.reply(r1.message_id), StepCompensated)
        await faults.fail_next(redis, keys(settings), 1, compensations=True)
        r2 = refund("f3")
        await produce(settings, [r2])
        failed = await events.reply(r2.message_id)
    assert isinstance(failed, StepFailed) and failed.compensation and failed.retryable


async def test_fail_rate(settings: Settings, events: TopicReader, redis: Redis) -> None:
    """Rate 1 fails every command (non-retryable when asked); rate 0 none."""
    await faults.fail_rate(redis, keys(settings), 1.0, retryable=False)
    failing = [charge(f"r{i}") for i in range(5)]
    async with running(settings, payment.build(), seed=7):
        await produce(settings, failing)
        r = await events.replies([c.message_id for c in failing])
        assert all(
            isinstance(x, StepFailed) and not x.retryable and "fail-rate" in x.reason
            for x in r.values()
        )
        await faults.fail_rate(redis, keys(settings), 0.0)
        ok = [charge(f"r{i}", attempt=2) for i in range(5)]
        await produce(settings, ok)
        r = await events.replies([c.message_id for c in ok])
    assert all(isinstance(x, StepCompleted) for x in r.values())
    with pytest.raises(ValueError):
        await faults.fail_rate(redis, keys(settings), 1.5)


async def test_fail_rate_is_a_share(settings: Settings, events: TopicReader, redis: Redis) -> None:
    """Rate 0.5 over 40 commands fails some and not all (seeded, so deterministic)."""
    await faults.fail_rate(redis, keys(settings), 0.5)
    cmds = [charge(f"h{i}") for i in range(40)]
    async with running(settings, payment.build(), seed=1):
        await produce(settings, cmds)
        r = await events.replies([c.message_id for c in cmds])
    failed = sum(isinstance(x, StepFailed) for x in r.values())
    assert 5 < failed < 35


async def test_latency_delays_replies(
    settings: Settings, events: TopicReader, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """latency 400: the worker waits 400 ms before it handles the command, and still replies.

    The wait is observed as the sleep the middleware asks for, not as elapsed time: this box is
    shared and noisy, and a timed assertion proves nothing there."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: object) -> object:
        slept.append(delay)
        return await real_sleep(delay, *args)

    async with running(settings, payment.build()) as worker:
        warm = charge("l0")
        await produce(settings, [warm])
        await events.reply(warm.message_id)  # the worker is assigned and polling
        await faults.latency(redis, keys(settings), 400)
        assert worker.stats.handled == 1
        monkeypatch.setattr(faults.asyncio, "sleep", recording_sleep)
        cmd = charge("l1")
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
        monkeypatch.undo()
    assert isinstance(reply, StepCompleted)
    assert 0.4 in slept, slept


async def test_no_reply_swallows_the_command(
    settings: Settings, events: TopicReader, redis: Redis
) -> None:
    """no-reply 1: the command is neither handled nor answered; the next one is."""
    await faults.no_reply(redis, keys(settings), 1)
    # Same saga, so the worker handles them in order: once the second reply is in, the first
    # one's reply would have been there before it.
    swallowed, after = charge("q1"), refund("q1")
    async with running(settings, payment.build()) as worker:
        await produce(settings, [swallowed, after])
        await events.reply(after.message_id)
        assert worker.stats.swallowed == 1
    assert events.replies_to(swallowed.message_id) == []
    assert (await snapshot(settings)).payments == []


async def test_no_reply_after_effect_keeps_the_effect(
    settings: Settings, events: TopicReader, redis: Redis
) -> None:
    """no-reply --after-effect: charged, unanswered; re-sent, it gets the stored reply."""
    await faults.no_reply(redis, keys(settings), 1, after_effect=True)
    cmd = charge("q2")
    # Another step of the same saga, handled after `cmd` (same saga, same order).
    marker = command("q2", "payment", "ProcessPayment", "marker_step", data=order())
    async with running(settings, payment.build()):
        await produce(settings, [cmd, marker])
        await events.reply(marker.message_id)
        assert events.replies_to(cmd.message_id) == []
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepCompleted)
    assert [e["sagaId"] for e in (await snapshot(settings)).payments] == ["q2"]


async def test_clear_removes_every_fault(
    settings: Settings, events: TopicReader, redis: Redis
) -> None:
    """After clear, commands succeed again."""
    await faults.fail_rate(redis, keys(settings), 1.0)
    await faults.latency(redis, keys(settings), 5)
    await faults.clear(redis, keys(settings))
    assert await faults.show(redis, keys(settings)) == {}
    cmd = charge("c1")
    async with running(settings, payment.build()):
        await produce(settings, [cmd])
        assert isinstance(await events.reply(cmd.message_id), StepCompleted)
