"""`ctx.tx` writes are all or nothing on the real Redis: when one queued write fails inside the
commit script, none of the command's writes stays applied, and the command fails non-retryably
with a reason naming the bad write."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from infra import redis as redis_factory
from participants.context import Effects
from participants.keys import SdkKeys, key_for
from participants.sdk import Context, Participant, SagaCommand
from participants.store import Store
from participants.testing import TopicReader, command, produce, running
from schemas.config import Settings
from schemas.messages import StepFailed
from tests.conftest import BOTH_REDIS

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [BOTH_REDIS, pytest.mark.participant_topics("loyalty")]


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    r = redis_factory.client(settings, decode=True)
    yield r
    keys = [k async for k in r.scan_iter(f"{settings.key_prefix}:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


async def contents(redis: Redis, keys: list[str]) -> dict[str, Any]:
    """What a person reading the keys would see: type, value and whether a TTL is set."""
    out: dict[str, Any] = {}
    for key in keys:
        kind = await redis.type(key)
        value: Any = None
        if kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            value = await redis.get(key)
        elif kind == "stream":
            value = await redis.xrange(key)
        ttl = await redis.pttl(key)
        out[key] = (kind, value, "ttl" if ttl > 0 else ttl)
    return out


async def test_a_failing_write_leaves_every_write_of_the_command_unapplied(
    settings: Settings, redis: Redis
) -> None:
    """Every kind of write `ctx.tx` allows, on keys that exist and keys that do not, then one
    that fails: afterwards every key reads exactly as before, and the failure names it."""
    p = key_for(redis, settings.key_prefix, "w")  # the slot of participant w's records
    k = {n: f"{p}:{n}" for n in ("h", "h2", "l", "l2", "s", "z", "str", "num", "ttl", "x", "new")}
    await redis.hset(k["h"], mapping={"a": "1", "b": "x", "n": "5", "f": "1.5"})
    await redis.rpush(k["l"], "one", "two", "three")
    await redis.sadd(k["s"], "m1", "m2")
    await redis.zadd(k["z"], {"z1": 1.0, "z2": 2.5})
    await redis.set(k["str"], "text", ex=600)
    await redis.set(k["num"], "41")
    await redis.set(k["ttl"], "v")
    await redis.xadd(k["x"], {"f": "v"})
    await redis.set(k["h2"], "a string, not a hash")
    before = await contents(redis, list(k.values()))

    fx = Effects()
    fx.hset(k["h"], {"a": "2", "c": "3"})
    fx.call("HSETNX", k["h"], "d", "4")
    fx.hincrby(k["h"], "n", 10)
    fx.call("HINCRBYFLOAT", k["h"], "f", "0.25")
    fx.call("HDEL", k["h"], "b")
    fx.rpush(k["l"], "four", "five")
    fx.call("LPUSH", k["l2"], "zero")
    fx.call("LTRIM", k["l"], 1, 2)
    fx.call("SADD", k["s"], "m3", "m1")
    fx.call("SREM", k["s"], "m2")
    fx.call("ZADD", k["z"], "CH", 9, "z1", 3, "z3")
    fx.call("ZINCRBY", k["z"], 1, "z2")
    fx.call("ZREM", k["z"], "z2")
    fx.set(k["str"], "other")
    fx.call("INCRBY", k["num"], 1)
    fx.call("INCRBYFLOAT", k["num"], "0.5")
    fx.call("EXPIRE", k["ttl"], 100)
    fx.call("PEXPIRE", k["str"], 5000)
    fx.call("XADD", k["x"], "*", "g", "w")
    fx.call("DEL", k["num"])
    fx.set(k["new"], "created")
    fx.hincrby(k["h2"], "points", 3)  # the bad one: the key holds a string
    fx.rpush(k["l"], "never")
    total = len(fx.ops)

    store = Store(redis, SdkKeys(settings.key_prefix, "w"), 600)
    cmd = command(f"s-{uuid.uuid4().hex[:8]}", "w", "Do", "step")
    outcome = await store.commit(cmd, {"ok": "1"}, fx)

    assert outcome.kind == "failed" and outcome.retryable is False
    assert outcome.reason.startswith(
        f"write {total - 1} of {total} (HINCRBY {k['h2']}) failed: WRONGTYPE"
    ), outcome.reason
    assert await contents(redis, list(k.values())) == before
    # the failure is the command's stored outcome: a redelivery gets it back, writes nothing
    again = await store.commit(cmd, {"ok": "1"}, fx)
    assert again == outcome and await contents(redis, list(k.values())) == before


@pytest.mark.parametrize(
    ("queue", "needle"),
    [
        (lambda fx, k: fx.hincrby(k, "n", 1), "(HINCRBY {k}) failed: ERR hash value is not an int"),
        (lambda fx, k: fx.call("HINCRBY", k, "n", "x"), "(HINCRBY {k}) failed: ERR value is not"),
        (lambda fx, k: fx.call("HSET", k, "odd"), "(HSET {k}) failed: ERR wrong number"),
        (lambda fx, k: fx.call("ZADD", k, "nan", "m"), "(ZADD {k}) failed: WRONGTYPE"),
    ],
    ids=["not-an-integer", "bad-increment", "odd-arguments", "wrong-type"],
)
async def test_each_kind_of_bad_write_is_named(
    settings: Settings, redis: Redis, queue: Any, needle: str
) -> None:
    """Value errors, argument errors and type errors alike: nothing applied, the write named."""
    k = key_for(redis, settings.key_prefix, "w", "bad")
    await redis.hset(k, "n", "not a number")
    ok = key_for(redis, settings.key_prefix, "w", "ok")
    fx = Effects()
    fx.rpush(ok, "first")
    queue(fx, k)
    store = Store(redis, SdkKeys(settings.key_prefix, "w"), 600)
    outcome = await store.commit(command("s-1", "w", "Do", "step"), {}, fx)
    assert outcome.kind == "failed" and not outcome.retryable
    assert needle.format(k=k).lower() in outcome.reason.lower(), outcome.reason
    assert outcome.reason.startswith("write 2 of 2 ")
    assert await redis.exists(ok) == 0 and await redis.hgetall(k) == {"n": "not a number"}


async def test_the_loyalty_style_handler_fails_once_and_applies_nothing(
    settings: Settings, redis: Redis
) -> None:
    """Through a running worker: the reply is StepFailed(retryable=false) naming the write, the
    earlier writes of the command are not applied, and a later attempt of the step (sent as the
    orchestrator would after a lost reply) does not apply them either."""
    svc = Participant("loyalty")

    @svc.action("AwardPoints")
    async def award(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        ctx.tx.rpush(ctx.key("log"), cmd.saga_id)
        ctx.tx.hset(ctx.key("awards"), {cmd.saga_id: 10})
        ctx.tx.hincrby(ctx.key("points"), "c-1", 10)
        return {"points": "10"}

    points = key_for(redis, settings.key_prefix, "loyalty", "points")
    await redis.set(points, "oops, a string")
    cmds = [command("s-9", "loyalty", "AwardPoints", "award", attempt=a) for a in (1, 2)]
    async with (
        TopicReader(settings, settings.events_topic) as events,
        running(settings, svc),
    ):
        await produce(settings, cmds)
        replies = await events.replies([c.message_id for c in cmds])
    for c in cmds:
        reply = replies[c.message_id]
        assert isinstance(reply, StepFailed) and reply.retryable is False
        assert reply.reason.startswith(f"write 3 of 3 (HINCRBY {points}) failed: WRONGTYPE")
    assert await redis.exists(key_for(redis, settings.key_prefix, "loyalty", "log")) == 0
    assert await redis.exists(key_for(redis, settings.key_prefix, "loyalty", "awards")) == 0
