"""`saga stuck` and `saga list --type` on the real Redis, with far more healthy old sagas than
the limit: the stuck ones and the asked-for type are found all the same."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import iso
from orchestrator.ops.query import PAGE_MAX, PAGE_MIN, SagaQuery, now_ms
from schemas.config import Settings
from tests.test_ops_cli_e2e import cli

MINUTE_MS = 60_000


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    r = redis_factory.client(settings, decode=True)
    yield r
    keys = [k async for k in r.scan_iter(f"{settings.key_prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await r.delete(*keys[i : i + 500])
    await r.aclose()


async def put(
    redis: Redis,
    keys: Keys,
    sagas: list[tuple[str, str, str, int, int]],
) -> None:
    """(id, type, state, entered ms, updated ms): the hash fields the queries read and the
    state index entry, as the daemon's step writes them."""
    async with redis.pipeline(transaction=False) as p:
        for sid, saga_type, state, entered, updated in sagas:
            p.hset(
                keys.saga(sid),
                mapping={
                    "saga_id": sid,
                    "type": saga_type,
                    "state": state,
                    "current_step": "s1",
                    "state_entered_at": iso(entered),
                    "updated_at": iso(updated),
                    "last_error": "",
                },
            )
            p.zadd(keys.index(state), {sid: entered})
        await p.execute()


async def test_stuck_sagas_are_found_behind_many_healthy_older_ones(
    settings: Settings, redis: Redis
) -> None:
    """2,500 pending sagas that entered their state two hours ago but move every second (a long
    saga advancing step by step) hide nothing: the five without progress for an hour are all
    found, whatever the limit, oldest first; a small limit gives the oldest stuck ones."""
    keys, now = Keys(settings.key_prefix), now_ms()
    healthy = [(f"ok-{i:05d}", "order", "pending", now - 120 * MINUTE_MS, now) for i in range(2500)]
    stuck = [
        (f"stuck-{i}", "order", "pending", now - (60 + i) * MINUTE_MS, now - 60 * MINUTE_MS)
        for i in range(3)
    ]
    stuck += [
        ("stuck-comp", "order", "compensating", now - 90 * MINUTE_MS, now - 70 * MINUTE_MS),
        ("stuck-ni", "order", "needs_intervention", now - 30 * MINUTE_MS, now - 30 * MINUTE_MS),
    ]
    recent = [("fresh", "order", "pending", now - 20 * MINUTE_MS, now - 5 * MINUTE_MS)]
    await put(redis, keys, healthy + stuck + recent)
    q = SagaQuery(redis, keys)

    found = await q.stuck(10 * MINUTE_MS, limit=1000)
    assert [s.saga_id for s in found] == ["stuck-comp", "stuck-2", "stuck-1", "stuck-0", "stuck-ni"]
    assert all(s.idle_s >= 600 for s in found)
    assert [s.saga_id for s in await q.stuck(10 * MINUTE_MS, limit=2)] == ["stuck-comp", "stuck-2"]
    assert [s.saga_id for s in await q.stuck(45 * MINUTE_MS, limit=10)] == [
        "stuck-comp",
        "stuck-2",
        "stuck-1",
        "stuck-0",
    ]

    # the CLI a person runs gives the same answer
    listed = (await cli(settings, "stuck", "--older-than", "10m", "--limit", "3", "--json")).json()
    assert [s["saga_id"] for s in listed] == ["stuck-comp", "stuck-2", "stuck-1"]


async def test_pages_that_split_a_run_of_equal_scores_lose_nothing(
    settings: Settings, redis: Redis
) -> None:
    """Sagas entered in the same millisecond straddle the page boundaries: each is read once."""
    keys, now = Keys(settings.key_prefix), now_ms()
    same = now - 60 * MINUTE_MS
    rows = [(f"s-{i:04d}", "order", "pending", same, same) for i in range(PAGE_MIN * 3 + 7)]
    rows += [(f"t-{i:04d}", "order", "pending", same + 1 + i // 50, same) for i in range(PAGE_MIN)]
    await put(redis, keys, rows)
    found = await SagaQuery(redis, keys).stuck(MINUTE_MS, limit=PAGE_MIN)
    assert len(found) == PAGE_MIN == len({s.saga_id for s in found})
    everything = await SagaQuery(redis, keys).stuck(MINUTE_MS, limit=10_000)
    assert sorted(s.saga_id for s in everything) == sorted(r[0] for r in rows)


async def test_list_by_type_returns_the_limit_of_that_type(
    settings: Settings, redis: Redis
) -> None:
    """`saga list --type trip --limit 3` gives three trips even when thousands of older sagas of
    another type come first in every index; the state and age filters still apply."""
    keys, now = Keys(settings.key_prefix), now_ms()
    orders = [
        (f"order-{i:05d}", "order", "completed", now - 100 * MINUTE_MS + i, now)
        for i in range(PAGE_MAX + 500)
    ]
    trips = [
        (f"trip-{i}", "trip", "completed" if i % 2 else "pending", now - 50 * MINUTE_MS + i, now)
        for i in range(6)
    ]
    await put(redis, keys, orders + trips)
    q = SagaQuery(redis, keys)

    assert [s.saga_id for s in await q.find(None, "trip", 0, 3)] == ["trip-0", "trip-1", "trip-2"]
    completed = await q.find(["completed"], "trip", 0, 10)
    assert [s.saga_id for s in completed] == ["trip-1", "trip-3", "trip-5"]
    assert await q.find(None, "trip", 60 * MINUTE_MS, 10) == []
    assert len(await q.find(["completed"], "order", 0, 50)) == 50
    assert await q.find(None, "nope", 0, 5) == []

    listed = (await cli(settings, "list", "--type", "trip", "--limit", "2", "--json")).json()
    assert [s["saga_id"] for s in listed] == ["trip-0", "trip-1"]
