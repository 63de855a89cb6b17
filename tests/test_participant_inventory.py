"""The inventory worker against real Kafka and Redis: reservations, releases, idempotency."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra import redis as redis_factory
from participants.samples.order.workers import inventory, seed_stock, snapshot
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import StepCompensated, StepCompleted, StepFailed
from tests.conftest import BOTH_REDIS

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [BOTH_REDIS, pytest.mark.participant_topics("inventory")]


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


def reserve(saga: str, items: dict[str, int], attempt: int = 1):  # type: ignore[no-untyped-def]
    return command(
        saga, "inventory", "ReserveItems", "reserve_inventory", attempt=attempt, data=order(items)
    )


def release(saga: str, attempt: int = 1, result: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return command(
        saga,
        "inventory",
        "ReleaseReservation",
        "reserve_inventory",
        attempt=attempt,
        compensation=True,
        data=order(),
        original_result=result,
    )


async def test_reserve_then_release_returns_exactly_the_stock(
    settings: Settings, events: TopicReader
) -> None:
    """A reservation takes every item; its release gives back exactly that."""
    await seed_stock(settings, {"A": 10, "B": 5})
    async with running(settings, inventory.build()):
        cmd = reserve("s1", {"A": 3, "B": 2})
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
        assert isinstance(reply, StepCompleted)
        assert reply.result == {"reservationId": "res-s1"}
        assert reply.message_id == f"{cmd.message_id}:reply"
        assert reply.causation_id == cmd.message_id and reply.correlation_id == "corr-s1"
        ledgers = await snapshot(settings)
        assert ledgers.stock == {"A": 7, "B": 3} and ledgers.reserved == {"A": 3, "B": 2}

        comp = release("s1", result=reply.result)
        await produce(settings, [comp])
        done = await events.reply(comp.message_id)
        assert isinstance(done, StepCompensated) and done.compensation
    ledgers = await snapshot(settings)
    assert ledgers.stock == {"A": 10, "B": 5} and ledgers.reserved == {"A": 0, "B": 0}
    assert ledgers.reservations["s1"]["status"] == "released"


async def test_out_of_stock_reserves_nothing(settings: Settings, events: TopicReader) -> None:
    """One item short in a multi-item order: non-retryable failure naming it, no stock taken."""
    await seed_stock(settings, {"A": 10, "B": 1, "C": 10})
    async with running(settings, inventory.build()):
        cmd = reserve("s2", {"A": 2, "B": 2, "C": 2})
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepFailed)
    assert not reply.retryable
    assert "out of stock: B" in reply.reason
    ledgers = await snapshot(settings)
    assert ledgers.stock == {"A": 10, "B": 1, "C": 10}
    assert "s2" not in ledgers.reservations


async def test_same_product_listed_twice_is_summed(settings: Settings, events: TopicReader) -> None:
    """An order listing a product twice needs the sum in stock."""
    await seed_stock(settings, {"A": 3})
    data = order({"A": 2})
    data["items"].append({"productId": "A", "quantity": 2})
    cmd = command("s3", "inventory", "ReserveItems", "reserve_inventory", data=data)
    async with running(settings, inventory.build()):
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepFailed) and "requested 4" in reply.reason


async def test_duplicate_command_gets_the_same_reply_and_reserves_once(
    settings: Settings, events: TopicReader
) -> None:
    """The same command three times: one reservation, three identical replies."""
    await seed_stock(settings, {"A": 10})
    cmd = reserve("s4", {"A": 4})
    async with running(settings, inventory.build()) as worker:
        await produce(settings, [cmd, cmd])
        await events.until(lambda _: len(events.replies_to(cmd.message_id)) == 2)
        await produce(settings, [cmd])  # again, in a later batch
        await events.until(lambda _: len(events.replies_to(cmd.message_id)) == 3)
        assert worker.stats.replayed == 2
    first, *others = events.replies_to(cmd.message_id)
    assert all(o == first for o in others)
    assert (await snapshot(settings)).stock == {"A": 6}


async def test_later_attempt_of_a_done_step_returns_the_same_result(
    settings: Settings, events: TopicReader
) -> None:
    """Attempt 2 after attempt 1 succeeded (its reply was lost): same reservation, no new stock."""
    await seed_stock(settings, {"A": 10})
    first, second = reserve("s5", {"A": 4}), reserve("s5", {"A": 4}, attempt=2)
    async with running(settings, inventory.build()):
        await produce(settings, [first])
        await events.reply(first.message_id)
        await produce(settings, [second])
        reply = await events.reply(second.message_id)
    assert isinstance(reply, StepCompleted) and reply.result == {"reservationId": "res-s5"}
    assert reply.attempt == 2 and reply.command_id == second.message_id
    assert (await snapshot(settings)).stock == {"A": 6}


async def test_compensation_before_the_action_refuses_the_action(
    settings: Settings, events: TopicReader
) -> None:
    """Release first (the reserve timed out): the late reserve is refused, no stock moves."""
    await seed_stock(settings, {"A": 10})
    comp, late = release("s6"), reserve("s6", {"A": 4})
    async with running(settings, inventory.build()):
        await produce(settings, [comp])
        assert isinstance(await events.reply(comp.message_id), StepCompensated)
        await produce(settings, [late])
        reply = await events.reply(late.message_id)
    assert isinstance(reply, StepFailed) and not reply.retryable and "refused" in reply.reason
    assert (await snapshot(settings)).stock == {"A": 10}


async def test_refusal_holds_inside_one_batch(settings: Settings, events: TopicReader) -> None:
    """Release and late reserve of the same saga in one batch: still refused."""
    await seed_stock(settings, {"A": 10})
    comp, late = release("s7"), reserve("s7", {"A": 4})
    await produce(settings, [comp, late])
    async with running(settings, inventory.build()):
        replies = await events.replies([comp.message_id, late.message_id])
    assert isinstance(replies[late.message_id], StepFailed)
    assert (await snapshot(settings)).stock == {"A": 10}


async def test_release_repeated_gives_back_once(settings: Settings, events: TopicReader) -> None:
    """Release sent twice (duplicate) and again as attempt 2: stock returned exactly once."""
    await seed_stock(settings, {"A": 10})
    cmd = reserve("s8", {"A": 4})
    async with running(settings, inventory.build()):
        await produce(settings, [cmd])
        result = (await events.reply(cmd.message_id)).result
        c1, c2 = release("s8", result=result), release("s8", attempt=2, result=result)
        await produce(settings, [c1, c1, c2])
        await events.until(
            lambda _: (
                len(events.replies_to(c1.message_id)) == 2
                and bool(events.replies_to(c2.message_id))
            )
        )
    assert all(
        isinstance(r, StepCompensated)
        for r in events.replies_to(c1.message_id) + events.replies_to(c2.message_id)
    )
    ledgers = await snapshot(settings)
    assert ledgers.stock == {"A": 10} and ledgers.reserved == {"A": 0}


async def test_set_stock_and_readers(settings: Settings) -> None:
    """set_stock writes what read_stock reads; negative stock is rejected."""
    redis = redis_factory.client(settings, decode=True)
    try:
        await inventory.set_stock(redis, settings.key_prefix, "SKU-9", 42)
        assert await inventory.read_stock(redis, settings.key_prefix) == {"SKU-9": 42}
        with pytest.raises(ValueError):
            await inventory.set_stock(redis, settings.key_prefix, "SKU-9", -1)
    finally:
        await redis.aclose()
