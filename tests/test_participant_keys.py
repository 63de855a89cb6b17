"""Where the participant SDK keeps its records. On one Redis: exactly where every earlier release
kept them, so a command handled before an upgrade is not run again after it. On a Redis Cluster:
every key of one guarded call in one slot (asked of the cluster itself with CLUSTER KEYSLOT)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from infra import redis as redis_factory
from participants.context import Context
from participants.keys import SdkKeys, domain_key, key_for
from participants.participant import Participant
from participants.samples.order.workers import inventory, payment, seed_stock, snapshot
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompleted, StepFailed
from tests.conftest import BOTH_REDIS

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("inventory", "payment", "slotted")


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = redis_factory.client(settings, decode=True)
    yield client
    await client.aclose()


def charge(saga: str, attempt: int = 1) -> SagaCommand:
    return command(
        saga, "payment", "ProcessPayment", "process_payment", attempt=attempt, data=order()
    )


def test_the_single_redis_layout_is_the_one_earlier_releases_wrote() -> None:
    """The key names on one Redis, spelled out: changing any of them strands the records an
    older SDK left (and runs their commands again)."""
    k = SdkKeys("saga", "payment")
    assert k.outcome("s1:process_payment:action:1") == (
        "saga:participant:payment:outcome:s1:process_payment:action:1"
    )
    assert k.done("s1", "process_payment", False) == (
        "saga:participant:payment:done:s1:process_payment:action"
    )
    assert k.done("s1", "process_payment", True) == (
        "saga:participant:payment:done:s1:process_payment:compensation"
    )
    assert (
        k.tombstone("s1", "process_payment")
        == "saga:participant:payment:tombstone:s1:process_payment"
    )
    assert domain_key("saga", "inventory", "stock") == "saga:inventory:stock"


def test_the_cluster_layout_tags_the_participant() -> None:
    """On a cluster the participant's name is the hash tag, in its SDK records and its own keys."""
    k = SdkKeys("saga", "payment", cluster=True)
    assert k.outcome("c1") == "saga:participant:{payment}:outcome:c1"
    assert k.tombstone("s1", "st") == "saga:participant:{payment}:tombstone:s1:st"
    assert domain_key("saga", "inventory", "stock", cluster=True) == "saga:{inventory}:stock"


async def test_records_of_an_earlier_release_are_honoured(
    settings: Settings, events: TopicReader, redis: Redis
) -> None:
    """A charge handled by an earlier release (its outcome, done record and effect written under
    the names it used, spelled out here) is redelivered, and a later attempt arrives, after the
    upgrade: both get the stored result, the handler never runs, nothing is charged twice. A
    compensation's tombstone from then still refuses a late forward action."""
    p = settings.key_prefix
    stored = (
        '{"kind":"completed","result":{"chargeId":"ch-up1","amount":"12.50"},"time":1700000000000}'
    )
    first = charge("up1")
    await redis.set(f"{p}:participant:payment:outcome:{first.message_id}", stored)
    await redis.set(f"{p}:participant:payment:done:up1:process_payment:action", stored)
    await redis.hset(
        f"{p}:payment:charges",
        "up1",
        '{"chargeId":"ch-up1","amount":"12.50","currency":"USD","customerId":"c-1",'
        '"status":"charged"}',
    )
    await redis.rpush(
        f"{p}:payment:ledger",
        '{"type":"charge","sagaId":"up1","chargeId":"ch-up1","amount":"12.50","currency":"USD"}',
    )
    # the compensation of saga up2's reservation ran before the upgrade
    await redis.set(f"{p}:participant:inventory:tombstone:up2:reserve_inventory", "1")
    await seed_stock(settings, {"A": 5})
    late = command("up2", "inventory", "ReserveItems", "reserve_inventory", data=order({"A": 1}))

    again = charge("up1", attempt=2)
    async with running(settings, payment.build()) as pay, running(settings, inventory.build()):
        await produce(settings, [first, again, late])
        replies = await events.replies([first.message_id, again.message_id, late.message_id])
        assert pay.stats.handled == 0 and pay.stats.replayed == 2
    for cmd in (first, again):
        reply = replies[cmd.message_id]
        assert isinstance(reply, StepCompleted), reply
        assert reply.result == {"chargeId": "ch-up1", "amount": "12.50"}
    refused = replies[late.message_id]
    assert isinstance(refused, StepFailed) and "refused" in refused.reason
    ledgers = await snapshot(settings)
    assert [e["sagaId"] for e in ledgers.payments] == ["up1"]
    assert ledgers.stock == {"A": 5} and "up2" not in ledgers.reservations


@BOTH_REDIS
async def test_one_guarded_call_touches_one_slot(
    settings: Settings, events: TopicReader, redis: Redis, redis_mode: str
) -> None:
    """A handler writing three of its own keys through `ctx.tx`: on the cluster, those keys and
    the SDK's outcome, done and tombstone keys of the command hash to one slot (CLUSTER
    KEYSLOT, asked of the server), and the call succeeds; on one Redis the names are the old
    ones. The readers outside a handler (`key_for`) name the same keys."""
    svc = Participant("slotted")
    seen: list[str] = []

    @svc.action("Write")
    async def write(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        keys = [ctx.key("a"), ctx.key("b", cmd.saga_id), ctx.key("{other}", "c")]
        seen.extend(keys)
        ctx.tx.hset(keys[0], {cmd.saga_id: 1})
        ctx.tx.rpush(keys[1], "x")
        ctx.tx.set(keys[2], "y")
        return {"n": str(len(keys))}

    @svc.compensation("Undo")
    async def undo(cmd: SagaCommand, ctx: Context) -> None:
        ctx.tx.hset(ctx.key("a"), {cmd.saga_id: 0})

    cmds = [command(f"sl{i}", "slotted", "Write", "write") for i in range(3)]
    comp = command("sl0", "slotted", "Undo", "write", compensation=True)
    async with running(settings, svc):
        await produce(settings, [*cmds, comp])
        replies = await events.replies([c.message_id for c in [*cmds, comp]])
    assert all(not isinstance(r, StepFailed) for r in replies.values()), replies
    assert await redis.hgetall(key_for(redis, settings.key_prefix, "slotted", "a")) == {
        "sl0": "0",
        "sl1": "1",
        "sl2": "1",
    }
    sdk = SdkKeys(settings.key_prefix, "slotted", cluster=redis_mode == "cluster")
    guard = [
        k for c in cmds for k in (sdk.outcome(c.message_id), sdk.done(c.saga_id, "write", False))
    ]
    guard += [
        sdk.outcome(comp.message_id),
        sdk.done("sl0", "write", True),
        sdk.tombstone("sl0", "write"),
    ]
    assert [k for k in guard if not await redis.exists(k)] == []
    if redis_mode == "cluster":
        node = Redis.from_url(settings.redis_url)  # any one node answers CLUSTER KEYSLOT
        try:
            slots = {await node.execute_command("CLUSTER", "KEYSLOT", k) for k in seen + guard}
        finally:
            await node.aclose()
        assert len(slots) == 1, slots
    else:
        assert seen[0] == f"{settings.key_prefix}:slotted:a"
        assert guard[0] == f"{settings.key_prefix}:participant:slotted:outcome:sl0:write:action:1"
