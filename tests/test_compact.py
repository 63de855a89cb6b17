"""Compaction of completed sagas (orchestrator/engine/compact.py) on the real Redis and the
Redis Cluster: the summary a person reads, what the engine and the queries make of it, a step
racing it, its idempotence and cursor, and hashes edited by hand."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from infra.redis import client
from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry
from orchestrator.core.model import Event, Reply, Start, command_id
from orchestrator.engine import compact
from orchestrator.engine.compact import compact_one, compact_shard, cursor_key
from orchestrator.engine.history import read as read_history
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import (
    SUMMARY,
    decode_fields,
    from_fields,
    logical_fields,
    summary_fields,
    to_fields,
)
from orchestrator.engine.store import RedisStore, Write
from orchestrator.ops.query import SagaQuery
from participants.samples.order.saga import ORDER_FULFILLMENT
from schemas.config import Settings
from tests.conftest import BOTH_REDIS
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant

pytestmark = BOTH_REDIS

D = ORDER_FULFILLMENT
REG = Registry([D])
STEPS = [s.name for s in D.steps]
T0 = 1_767_261_600_000
RETENTION_S = 3600


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[RedisStore]:
    s = RedisStore(client(settings), Keys.of(settings), REG, RETENTION_S, 60)
    yield s
    await s.aclose()
    await s.redis.aclose()


def ok(step: str) -> Reply:
    return Reply("completed", step, 1, result={"ref": f"{step}-ref-with-some-length"})


async def step(store: RedisStore, sid: str, event: Event, now: int, msg_id: str = "") -> str:
    """One input through decide and the real step script, as the daemon applies it."""
    raws, _ = await store.load_raw([sid])
    raw = raws[sid]
    state = store.parse(raw, sid)
    if isinstance(event, Reply) and state is not None:  # answers the command issued
        event = replace(event, command_id=command_id(sid, event.step, False, event.attempt))
    t = decide(state, event, now, REG)
    assert t.state is not None, t.note
    w = Write(
        saga_id=sid,
        message_id=msg_id or f"{sid}:{now}",
        expected_version=state.version if state else 0,
        transition=t,
        definition=D,
        before_status=state.status.value if state else None,
        event_name=type(event).__name__,
        remember="start" if isinstance(event, Start) and t.outcome == "applied" else "",
        before_fields=raw,
        fields=to_fields(t.state, D) if t.outcome == "applied" else {},
    )
    (result,) = await store.apply([w])
    assert result.status in ("ok", "duplicate"), result
    return t.outcome


async def completed_saga(
    store: RedisStore, sid: str, data: dict[str, Any] | None = None, t0: int = T0
) -> None:
    """A four-step order saga, started and completed through the real step script (at
    `t0 + 4000`: the score of its `completed` index entry)."""
    start = Start(sid, D.name, data or {"orderId": sid, "amount": "59.90"}, "corr-" + sid, "00-ab")
    assert await step(store, sid, start, t0, f"start-{sid}") == "applied"
    for i, name in enumerate(STEPS):
        assert await step(store, sid, ok(name), t0 + 1000 * (i + 1)) == "applied"


def now() -> int:
    return int(time.time() * 1000)


def partition(store: RedisStore, sid: str) -> int:
    return store.keys.partition(sid)


async def fields_of(store: RedisStore, sid: str) -> dict[str, str]:
    return decode_fields(await store.redis.hgetall(store.keys.saga(sid)))


async def test_a_completed_saga_becomes_a_readable_summary(store: RedisStore) -> None:
    """HGETALL shows type, state, version, times and each step's outcome with its time; the
    history and seen set go, the TTL stays; the engine and `saga status` read it back."""
    sid, k, r = "cmp-1", store.keys, store.redis
    await completed_saga(store, sid)
    ttl_before = await r.ttl(k.saga(sid))
    full = from_fields(await fields_of(store, sid), D, sid)
    assert await compact_shard(r, k, partition(store, sid), now(), 10) == 1

    f = await fields_of(store, sid)
    assert f == {
        "type": D.name,
        "state": "completed",
        "version": "5",
        "created_at": "2026-01-01T10:00:00.000+00:00",
        "updated_at": "2026-01-01T10:00:04.000+00:00",
        "correlation_id": "corr-" + sid,
        SUMMARY: "completed@1000 completed@2000 completed@3000 completed@4000",
    }
    assert await r.exists(k.history(sid), k.seen(sid)) == 0
    assert 0 < await r.ttl(k.saga(sid)) <= ttl_before
    assert await r.exists(k.tombstone(sid)) == 1  # still outlives the summary

    # The same saga, minus what was dropped (data, results, attempts, traceparent).
    dropped = [replace(s, attempts=0, result=None) for s in full.steps]
    assert from_fields(f, D, sid) == replace(full, data={}, steps=tuple(dropped), traceparent="")
    status = await SagaQuery(r, k, REG).status(sid)
    assert (status.state, status.version, status.current_step) == ("completed", 5, STEPS[-1])
    assert [(s.name, s.status) for s in status.steps] == [(n, "completed") for n in STEPS]
    assert status.timeline == []
    listed = await SagaQuery(r, k, REG).find(["completed"])
    assert [s.saga_id for s in listed] == [sid]

    # Idempotent: compacted already, nothing to do (and the cursor has moved past it).
    assert await compact_shard(r, k, partition(store, sid), now(), 10) == 0
    assert await compact_one(r, k, sid) is False
    assert await fields_of(store, sid) == f


async def test_inputs_after_compaction_are_refused_as_before(store: RedisStore) -> None:
    """A duplicate start (a new message id) and a late copy of a reply meet a completed saga:
    ignored and recorded, the summary unchanged."""
    sid, k, r = "cmp-2", store.keys, store.redis
    await completed_saga(store, sid)
    assert await compact_one(r, k, sid) is True
    summary = await fields_of(store, sid)
    start = Start(sid, D.name, {"orderId": sid}, "", "")
    assert await step(store, sid, start, T0 + 9000, "another-start-id") == "ignored"
    assert await step(store, sid, ok(STEPS[1]), T0 + 9001) == "ignored"
    assert await fields_of(store, sid) == summary
    notes = [e["note"] for e in await read_history(r, k.history(sid))]
    assert notes[0].startswith("start for existing saga (state completed)"), notes
    assert 0 < await r.ttl(k.history(sid)) <= RETENTION_S  # goes with the saga


async def test_the_grace_period_the_partition_and_the_limit(store: RedisStore) -> None:
    sid, k, r = "cmp-3", store.keys, store.redis
    await completed_saga(store, sid)  # completed in 2026-01-01 (the scores are its times)
    age = await compact_shard(r, k, partition(store, sid), T0 + 3999, 10)  # before it completed
    other = (partition(store, sid) + 1) % k.partitions
    assert (age, await compact_shard(r, k, other, now(), 10)) == (0, 0)
    assert await compact_shard(r, k, partition(store, sid), now(), 0) == 0
    assert SUMMARY not in await fields_of(store, sid)
    assert await compact_shard(r, k, partition(store, sid), now(), 10) == 1


async def test_the_cursor_moves_on_and_ties_are_not_cut(store: RedisStore) -> None:
    """Rounds of `limit` go on from where the last one stopped; sagas that completed in the
    same millisecond are taken together, even across a page boundary."""
    k, r = store.keys, store.redis
    # saga ids of one partition, so one relay's rounds see them all
    ids = [s for s in (f"cmp-tie-{i}" for i in range(60)) if partition(store, s) == 0][:5]
    assert len(ids) == 5
    for n, sid in enumerate(ids):  # two complete at one time, three at a later one
        await completed_saga(store, sid, t0=T0 if n < 2 else T0 + 10)
    rows: Any = await r.zrange(k.index("completed", k.shard_of(ids[0])), 0, -1, withscores=True)
    assert sorted(int(s) for _, s in rows) == [T0 + 4000] * 2 + [T0 + 4010] * 3
    assert await compact_shard(r, k, 0, now(), 2) == 2
    assert await compact_shard(r, k, 0, now(), 2) == 3
    assert await compact_shard(r, k, 0, now(), 2) == 0
    assert all([SUMMARY in await fields_of(store, sid) for sid in ids])
    assert await r.get(cursor_key(k, 0)) == str(T0 + 4010).encode()
    # a cursor edited by hand: starts over, and finds nothing left to do
    await r.set(cursor_key(k, 0), "not a number")
    assert await compact_shard(r, k, 0, now(), 100) == 0


async def test_a_step_racing_the_compaction(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input recorded, or a version bumped, between compaction's read and its script: the
    script refuses, compaction reads again and compacts what is there now; a saga that keeps
    changing is left whole after `ATTEMPTS` reads."""
    sid, k, r = "cmp-race", store.keys, store.redis
    await completed_saga(store, sid)
    built: list[dict[str, str]] = []
    writes: list[Any] = []
    real_fields, real_register = summary_fields, r.register_script

    def patched_fields(raw: dict[Any, Any], hist: list[dict[str, str]]) -> dict[str, str] | None:
        out = real_fields(raw, hist)
        built.append(out or {})
        return out

    def patched_register(script: str) -> Any:
        s = real_register(script)

        async def call(keys: list[str], args: list[Any]) -> Any:
            if writes:  # the racing write lands after the read, before the script
                await writes.pop(0)()
            return await s(keys=keys, args=args)

        return call

    monkeypatch.setattr(compact, "summary_fields", patched_fields)
    monkeypatch.setattr(r, "register_script", patched_register)

    # 1. A late copy of a reply, recorded as ignored: the history grew, the version did not.
    writes.append(lambda: step(store, sid, ok(STEPS[2]), T0 + 7000))
    assert await compact_one(r, k, sid) is True
    assert len(built) == 2 and built[0] == built[1]  # read again; same summary, history gone
    assert await r.exists(k.history(sid)) == 0

    # 2. A step that moved the version (written by hand here: a completed saga moves no more).
    sid2 = "cmp-race-2"
    await completed_saga(store, sid2)
    built.clear()
    writes.append(lambda: r.hset(k.saga(sid2), "version", "6"))
    assert await compact_one(r, k, sid2) is True
    assert [b["version"] for b in built] == ["5", "6"]
    assert (await fields_of(store, sid2))["version"] == "6"

    # 3. Changing under every read: left whole, nothing lost.
    sid3 = "cmp-race-3"
    await completed_saga(store, sid3)
    before = await fields_of(store, sid3)
    for i in range(compact.ATTEMPTS):
        writes.append(lambda i=i: step(store, sid3, ok(STEPS[0]), T0 + 8000 + i))
    assert await compact_one(r, k, sid3) is False
    assert await fields_of(store, sid3) == before
    assert len(await read_history(r, k.history(sid3))) == 5 + compact.ATTEMPTS


async def test_what_is_not_compacted(store: RedisStore) -> None:
    """Left whole, without an error: a saga not completed, a hash edited by hand (a step that
    does not parse, no version), one the choreography tracker owns, a hash table (large data),
    something that is not a hash; the round goes on past them."""
    k, r = store.keys, store.redis
    sids = [f"cmp-no-{i}" for i in range(6)]
    for sid in sids[:5]:
        big = {"orderId": sid, "blob": "x" * 2000} if sid == sids[3] else None
        await completed_saga(store, sid, big)
    await r.hset(k.saga(sids[0]), f"step.{STEPS[1]}", "exploded a=1")
    await r.hdel(k.saga(sids[1]), "version")
    await r.hset(k.saga(sids[2]), "mode", "choreography")
    assert (await r.object("encoding", k.saga(sids[3]))) in (b"hashtable", "hashtable")
    await r.delete(k.saga(sids[4]))
    await r.set(k.saga(sids[4]), "not a hash")
    await r.zadd(k.index("completed", k.shard_of(sids[5])), {sids[5]: T0})  # expired already
    before = {sid: await r.type(k.saga(sid)) for sid in sids}
    snapshot = {sid: await fields_of(store, sid) for sid in sids[:4]}
    for p in k.all_partitions():
        assert await compact_shard(r, k, p, now(), 100) == 0
    assert {sid: await r.type(k.saga(sid)) for sid in sids} == before
    assert {sid: await fields_of(store, sid) for sid in sids[:4]} == snapshot
    for sid in sids[:4]:
        assert await r.exists(k.history(sid)) == 1


async def test_a_summary_edited_by_hand_is_shown_not_guessed(store: RedisStore) -> None:
    """A `steps` field that does not fit the definition: the engine refuses to decode it (as
    any malformed hash), `saga status` shows the saga with its raw summary."""
    sid, k, r = "cmp-hand", store.keys, store.redis
    await completed_saga(store, sid)
    assert await compact_one(r, k, sid) is True
    await r.hset(k.saga(sid), SUMMARY, "completed banana")
    f = await fields_of(store, sid)
    with pytest.raises(ValueError, match="steps"):
        from_fields(f, D, sid)
    shown = logical_fields(f, D, sid)
    assert shown[SUMMARY] == "completed banana"
    status = await SagaQuery(r, k, REG).status(sid)
    assert status.state == "completed"


async def test_the_relay_compacts_and_a_duplicate_start_is_still_refused(
    settings: Settings, reader: SagaReader
) -> None:
    """End to end: the real orchestrator's relay compacts completed sagas once
    SAGA_COMPACT_AFTER_S has passed; a start sent again afterwards runs nothing."""
    ids = [f"cmp-e2e-{i}" for i in range(3)]

    def start(sid: str) -> tuple[bytes, bytes]:
        doc = {"sagaId": sid, "command": "StartOrder", "customerId": "c-1", "amount": 42.5,
               "items": [{"productId": "sku-1", "quantity": 2}]}  # fmt: skip
        return sid.encode(), orjson.dumps(doc)

    k, r = reader.keys, reader.redis
    async with ScriptedParticipant(settings) as p, running(settings, compact_after_s=0.2):
        await produce(settings, settings.commands_topic, [start(sid) for sid in ids])
        assert set((await reader.wait_final(ids)).values()) == {"completed"}

        async def compacted() -> bool:
            return all([await r.hexists(k.saga(sid), SUMMARY) for sid in ids])

        await wait_for(compacted, 60, "the relay to compact the completed sagas")
        assert await r.exists(*[k.history(sid) for sid in ids]) == 0
        await produce(settings, settings.commands_topic, [start(ids[0])])

        async def recorded() -> bool:
            return bool(await reader.history(ids[0]))

        await wait_for(recorded, 60, "the second start to be recorded")
    (entry,) = await reader.history(ids[0])
    assert (entry["outcome"], entry["state"]) == ("ignored", "completed"), entry
    assert len(p.by_saga[ids[0]]) == len(STEPS)  # no command sent again
    assert (await reader.fields(ids[0]))["state"] == "completed"
