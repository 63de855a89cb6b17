"""The relay's partition ownership against the real Redis (and Kafka where it fires): taking a
partition, keeping it, losing it to a later take (fenced: nothing read, nothing fired), a
revoke that acts at once, the lag per partition, and the global timers and outbox of older
versions drained by the owner of partition 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infra import kafka
from infra import redis as redis_factory
from orchestrator.core.definition import Registry
from orchestrator.engine.keys import Keys
from orchestrator.engine.ownership import Ownership
from orchestrator.engine.relay import Relay
from orchestrator.engine.store import RedisStore
from orchestrator.telemetry.metrics import Metrics
from schemas.config import Settings
from tests.conftest import BOTH_REDIS
from tests.support.orch import orchestrator_settings
from tests.support.sagas_fast import ORDER_FAST
from tests.test_engine_relay import command, published_ids
from tests.test_relay_fencing import records_in


@dataclass
class Copy:
    """One orchestrator copy's relay, without its consumer: the test assigns partitions."""

    relay: Relay
    own: Ownership
    metrics: Metrics


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = redis_factory.client(settings)
    yield client
    await client.aclose()


@pytest.fixture
async def copies(settings: Settings, redis: Redis) -> AsyncIterator[list[Copy]]:
    """Two copies sharing one producer (what they send is what is checked)."""
    s = orchestrator_settings(settings, outbox_sweep_age_s=5.0)
    producer = kafka.producer(s)
    await producer.start()
    made: list[Copy] = []
    for _ in range(2):
        metrics = Metrics()
        store = RedisStore(redis, Keys.of(s), Registry([ORDER_FAST]), s.retention_s)
        own = Ownership(redis, store.keys, metrics)
        relay = Relay(s, store, producer, asyncio.Event(), metrics, ownership=own)
        made.append(Copy(relay, own, metrics))
    try:
        yield made
    finally:
        await producer.stop()


def timer(saga_id: str) -> str:
    return f"{saga_id}|timeout|reserve_inventory|1|a"


def saga_in(keys: Keys, partition: int) -> str:
    """A saga id of that partition."""
    return next(sid for i in range(10_000) if keys.partition(sid := f"own-{i}") == partition)


@BOTH_REDIS
async def test_take_keep_and_lose_a_partition(settings: Settings, redis: Redis) -> None:
    """A take bumps the partition's epoch and names the copy; its reads go on while it holds
    the token; a later take by another copy fences it: the read returns nothing (None), is
    counted, and the partition is dropped, while the other partitions stay."""
    keys = Keys.of(settings)
    a, b = Ownership(redis, keys, Metrics()), Ownership(redis, keys, Metrics())
    a.assign([0, 1])
    await a.take_pending()
    assert a.owned() == [0, 1] and not a.pending
    assert (await redis.get(keys.owner(0))) == f"{a.member}:1".encode()
    assert await redis.get(keys.epoch(0)) == b"1"
    now = int(time.time() * 1000)
    await redis.zadd(keys.timers_of(0), {timer("t0"): now - 10})
    for _ in range(3):  # kept: every read answers
        assert await a.due_timers(0, keys.timers_of(0), now, 10) == [(timer("t0"), now - 10)]
    assert a.metrics.relay_partitions == 2

    b.assign([0])
    await b.take_pending()
    assert (await redis.get(keys.owner(0))) == f"{b.member}:2".encode()
    assert await a.due_timers(0, keys.timers_of(0), now, 10) is None  # fenced
    assert a.metrics.relay_fenced == 1 and a.owned() == [1]
    assert a.metrics.relay_partitions == 1
    assert await a.due_timers(0, keys.timers_of(0), now, 10) is None  # no longer asked
    assert a.metrics.relay_fenced == 1
    assert await a.outbox_rows(1, keys.outbox_of(1), "-", "+", 10) == []  # still ours
    assert await b.due_timers(0, keys.timers_of(0), now, 10) == [(timer("t0"), now - 10)]


@BOTH_REDIS
async def test_a_revoke_acts_at_once_even_with_a_take_on_its_way(
    settings: Settings, redis: Redis
) -> None:
    """A revoke drops the partition without a Redis call; a take that was on its way when the
    revoke came does not make the copy serve the partition."""
    keys = Keys.of(settings)
    own = Ownership(redis, keys, Metrics())
    own.assign([0, 1, 2])
    await own.take_pending()
    own.revoke([1])
    assert own.owned() == [0, 2]
    assert await own.due_timers(1, keys.timers_of(1), 0, 10) is None
    assert own.metrics.relay_fenced == 0  # not asked: not a fenced read

    real = own._take

    async def revoked_meanwhile(**kw: object) -> object:
        own.revoke([2])  # the revoke arrives while the take is on its way
        return await real(**kw)  # type: ignore[arg-type]

    own._take = revoked_meanwhile  # type: ignore[assignment]
    own.assign([2])
    await own.take_pending()
    assert own.owned() == [0] and not own.pending


@BOTH_REDIS
async def test_a_fenced_copy_fires_nothing_and_the_owner_fires(
    settings: Settings, redis: Redis, copies: list[Copy]
) -> None:
    """Copy A took every partition, copy B took one of them later: A's round fires nothing of
    it (the timer and the outbox entry stay, nothing reaches Kafka) and counts the fence; B's
    round fires the timer and re-publishes the command."""
    a, b = copies
    keys = Keys.of(settings)
    part = 1
    sid = saga_in(keys, part)
    old = int(time.time() * 1000) - 60_000
    await redis.zadd(keys.timers_of(part), {timer(sid): old})
    fields, cid = command(sid, 1)
    await redis.xadd(keys.outbox_of(part), fields, id=f"{old}-0")  # type: ignore[arg-type]
    a.own.assign(keys.all_partitions())
    await a.own.take_pending()
    b.own.assign([part])
    await b.own.take_pending()

    await a.relay.round()
    assert a.metrics.relay_fenced == 1 and part not in a.own.owned()
    assert a.metrics.timers_fired == 0 and a.metrics.outbox_republished == 0
    assert part not in a.metrics.relay_lag_s
    assert await redis.zscore(keys.timers_of(part), timer(sid)) == old
    assert await redis.xlen(keys.outbox_of(part)) == 1
    assert await records_in(settings, settings.events_topic) == 0
    assert await records_in(settings, settings.commands_topic) == 0

    await b.relay.round()
    assert b.metrics.timers_fired == 1 and b.metrics.outbox_republished == 1
    assert await redis.zcard(keys.timers_of(part)) == 0
    assert await redis.xlen(keys.outbox_of(part)) == 0
    assert await records_in(settings, settings.events_topic) == 1
    assert await published_ids(settings, expect=1) == {cid}


@BOTH_REDIS
async def test_relay_lag_per_owned_partition(
    settings: Settings, redis: Redis, copies: list[Copy]
) -> None:
    """The lag of a partition is how long its oldest due timer, or its oldest outbox entry past
    the sweep age, has waited; 0 once served; in /metrics by partition label."""
    relay, metrics = copies[0].relay, copies[0].metrics
    keys = Keys.of(settings)
    now = int(time.time() * 1000)
    await redis.zadd(keys.timers_of(0), {timer(saga_in(keys, 0)): now - 30_000})
    fields, _ = command(saga_in(keys, 2), 1)  # 60 s old, the sweep age is 5 s: 55 s late
    await redis.xadd(keys.outbox_of(2), fields, id=f"{now - 60_000}-0")  # type: ignore[arg-type]
    copies[0].own.assign(keys.all_partitions())
    await relay.round()
    lag = metrics.relay_lag_s
    assert set(lag) == {0, 1, 2}
    assert 30 <= lag[0] < 300 and 55 <= lag[2] < 300 and lag[1] == 0, lag
    text = metrics.render()
    assert f'saga_relay_lag_seconds{{partition="0"}} {lag[0]:.3f}' in text
    assert "saga_relay_partitions 3" in text
    await relay.round()
    assert metrics.relay_lag_s == {0: 0.0, 1: 0.0, 2: 0.0}
    copies[0].own.revoke([1])
    assert set(metrics.relay_lag_s) == {0, 2}  # only what it owns


async def test_the_old_global_timers_and_outbox_are_drained_by_partition_0s_owner(
    settings: Settings, redis: Redis, copies: list[Copy]
) -> None:
    """One Redis, data an older version left in `<prefix>:_timers` and `<prefix>:_outbox`:
    the owner of partition 0 fires and re-publishes it; a copy without partition 0 does not
    touch it."""
    a, b = copies
    keys = Keys.of(settings)
    old = int(time.time() * 1000) - 60_000
    await redis.zadd(keys.old_timers, {timer("legacy-1"): old})
    fields, cid = command("legacy-1", 1)
    await redis.xadd(keys.old_outbox, fields, id=f"{old}-0")  # type: ignore[arg-type]

    a.own.assign([1, 2])
    await a.relay.round()
    assert await redis.zcard(keys.old_timers) == 1 and await redis.xlen(keys.old_outbox) == 1

    b.own.assign([0])
    await b.relay.round()
    assert await redis.zcard(keys.old_timers) == 0 and await redis.xlen(keys.old_outbox) == 0
    assert b.metrics.timers_fired == 1 and b.metrics.outbox_republished == 1
    assert b.metrics.relay_lag_s[0] >= 55  # the old entries count in partition 0's lag
    assert await records_in(settings, settings.events_topic) == 1
    assert await published_ids(settings, expect=1) == {cid}
    assert a.metrics.timers_fired == 0


async def test_an_owner_key_that_is_not_a_token_fences_or_fails_loudly(
    settings: Settings, redis: Redis
) -> None:
    """`_owner` edited by hand: another string fences the copy (nothing read); another type
    makes the read fail with Redis' error (the round is retried, nothing fired)."""
    keys = Keys.of(settings)
    own = Ownership(redis, keys, Metrics())
    own.assign([0, 1])
    await own.take_pending()
    await redis.set(keys.owner(0), "someone:99")
    assert await own.due_timers(0, keys.timers_of(0), 0, 10) is None
    await redis.delete(keys.owner(1))
    await redis.hset(keys.owner(1), mapping={"not": "a token"})
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await own.due_timers(1, keys.timers_of(1), 0, 10)
    assert own.owned() == [1] and own.metrics.relay_fenced == 1


def test_partition_keys_refuse_what_is_not_a_partition() -> None:
    keys = Keys("saga", partitions=3)
    assert keys.outbox_of(2) == "saga:{p2}:_outbox" and keys.owner(0) == "saga:{p0}:_owner"
    assert keys.index("started") == "saga:_index:started"  # one Redis: global indexes
    assert keys.saga("o-1") == "saga:o-1"  # and the readable saga key
    for bad in (-1, 3):
        with pytest.raises(ValueError, match="not one of the 3"):
            keys.timers_of(bad)
    with pytest.raises(ValueError, match="the shards are the partitions"):
        Keys("saga", shards=3, partitions=4)
    with pytest.raises(ValueError):
        Keys("saga", partitions=-1)
    assert Keys("saga", shards=4).partitions == 4 and Keys("saga").partitions == 1
