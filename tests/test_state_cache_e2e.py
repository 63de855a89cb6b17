"""The partition owner's state cache (orchestrator/engine/cache.py) against the real Kafka and
Redis (single and Cluster): a saga's later inputs are decided without reading it back; a write
by another path, a rebalance and a compaction racing a cached saga all end with the saga
correct, because `step.lua`'s version check refuses a step decided on a stale entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from infra import redis as redis_factory
from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry
from orchestrator.core.model import Reply, command_id
from orchestrator.engine.compact import compact_one
from orchestrator.engine.daemon import Orchestrator
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import SUMMARY, to_fields
from orchestrator.engine.store import RedisStore, Write, WriteResult
from schemas.config import Settings
from tests.conftest import BOTH_REDIS
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, orchestrator_settings, running, with_order_starts
from tests.support.sagas_patient import ORDER_PATIENT
from tests.test_engine_batch import completed
from tests.test_orchestrator_e2e import start_order

pytestmark = BOTH_REDIS

D = ORDER_PATIENT  # no timeouts that matter: only the test's inputs move a saga
REGISTRY = Registry([D])
STEPS = [(s.name, s.action) for s in D.steps]


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[RedisStore]:
    """A second writer, outside the daemon, with its own Redis client."""
    store = RedisStore(redis_factory.client(settings), Keys.of(settings), REGISTRY, 3600, 60)
    yield store
    await store.aclose()
    await store.redis.aclose()


async def direct_step(store: RedisStore, sid: str, step: str) -> None:
    """The step's reply applied straight to Redis through decide and `step.lua`, as another
    copy of the daemon would (its own load, its own version)."""
    raws, _ = await store.load_raw([sid])
    state = store.parse(raws[sid], sid)
    assert state is not None
    event = Reply("completed", step, 1, command_id=command_id(sid, step, False, 1))
    t = decide(state, event, state.updated_ms + 1, REGISTRY)
    assert t.outcome == "applied" and t.state is not None, t.note
    write = Write(
        saga_id=sid,
        message_id=f"direct:{sid}:{step}",
        expected_version=state.version,
        transition=t,
        definition=D,
        before_status=state.status.value,
        event_name="StepCompleted",
        before_fields=raws[sid],
        fields=to_fields(t.state, D),
    )
    (result,) = await store.apply([write])
    assert result.status == "ok", result


async def reply(settings: Settings, sid: str, step: str) -> None:
    action = dict(STEPS)[step]
    await produce(settings, settings.events_topic, [(sid.encode(), completed(sid, step, action))])


async def wait_step(reader: SagaReader, sid: str, step: str, status: str = "running") -> None:
    async def there() -> bool:
        return (await reader.fields(sid)).get(f"step.{step}.status") == status

    await wait_for(there, 60, f"{sid}: {step} {status}")


async def wait_cached(orch: Orchestrator, sid: str, version: int | None) -> None:
    """The daemon updates its cache once the step's reply is back, a moment after Redis
    shows the step: wait for the entry at `version` (None: for the saga to leave)."""

    async def there() -> bool:
        entry = orch.cache.peek(sid)
        return (
            entry is None
            if version is None
            else (entry is not None and entry.state.version == version)
        )

    await wait_for(there, 60, f"{sid} cached at version {version}")


def record_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every saga id the daemon reads from Redis (HGETALL), in order."""
    loaded: list[str] = []
    real = RedisStore.load_raw

    async def load_raw(self: RedisStore, ids: list[str], starting: Any = ()) -> Any:
        loaded.extend(ids)
        return await real(self, ids, starting)

    monkeypatch.setattr(RedisStore, "load_raw", load_raw)
    return loaded


def record_writes(monkeypatch: pytest.MonkeyPatch, sid: str) -> list[tuple[int, str]]:
    """(expected version, result) of every step the daemon writes for `sid`."""
    writes: list[tuple[int, str]] = []
    real = RedisStore.apply

    async def apply(self: RedisStore, batch: list[Write]) -> list[WriteResult]:
        results = await real(self, batch)
        writes.extend(
            (w.expected_version, r.status)
            for w, r in zip(batch, results, strict=True)
            if w.saga_id == sid
        )
        return results

    monkeypatch.setattr(RedisStore, "apply", apply)
    return writes


@pytest.mark.parametrize("size", [100, 0])
async def test_later_inputs_are_decided_on_the_cached_state(
    settings: Settings, reader: SagaReader, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """With the cache, a four-step saga is read from Redis once (for its start) and its four
    replies are decided on what the daemon wrote; with SAGA_STATE_CACHE_SIZE=0 each input
    reads it. Either way it completes the same, and a completed saga leaves the cache."""
    sid = f"cached-{size}"
    loaded = record_loads(monkeypatch)
    async with running(settings, REGISTRY, state_cache_size=size) as orch:
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        for i, (step, _) in enumerate(STEPS):
            await wait_step(reader, sid, step)
            if size:
                await wait_cached(orch, sid, i + 1)
            assert size or sid not in orch.cache
            await reply(settings, sid, step)
        assert await reader.wait_final([sid]) == {sid: "completed"}
        await wait_cached(orch, sid, None)
        hits = orch.metrics.state_cache_hits
    assert loaded.count(sid) == (1 if size else 5), loaded
    assert hits == (4 if size else 0)
    fields = await reader.fields(sid)
    assert fields["version"] == "5"
    history = await reader.history(sid)
    assert [h["outcome"] for h in history] == ["applied"] * 5, history


async def test_a_write_by_another_path_is_refused_then_reloaded(
    settings: Settings, reader: SagaReader, other: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer steps a saga the daemon holds cached. The next reply, decided on the
    stale entry (where it answers nothing the saga waits for), is refused by the version
    check, the entry dropped, the saga reloaded and the reply applied on the other writer's
    version; the saga then completes with one applied entry per input."""
    sid = "cached-other"
    writes = record_writes(monkeypatch, sid)
    async with running(settings, REGISTRY) as orch:
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        await wait_step(reader, sid, "reserve_inventory")
        await wait_cached(orch, sid, 1)

        await direct_step(other, sid, "reserve_inventory")  # version 2, behind the daemon
        await reply(settings, sid, "process_payment")
        await wait_step(reader, sid, "process_payment", "completed")
        await wait_cached(orch, sid, 3)
        # the start, the other writer's step, then the daemon's: refused, and applied once
        assert writes == [(0, "ok"), (1, "ok"), (1, "conflict"), (2, "ok")], writes

        for step in ("create_shipment", "send_confirmation"):
            await wait_step(reader, sid, step)
            await reply(settings, sid, step)
        assert await reader.wait_final([sid]) == {sid: "completed"}
    fields = await reader.fields(sid)
    assert fields["version"] == "5"
    history = await reader.history(sid)
    assert [(h["outcome"], h["input"]) for h in history][1:] == [
        ("applied", f"direct:{sid}:reserve_inventory"),
        ("applied", f"{sid}:process_payment:action:1:reply"),
        ("applied", f"{sid}:create_shipment:action:1:reply"),
        ("applied", f"{sid}:send_confirmation:action:1:reply"),
    ], history


async def test_a_compaction_racing_a_cached_saga_is_kept(
    settings: Settings, reader: SagaReader, other: RedisStore
) -> None:
    """A saga cached at its last step is completed by another writer and compacted to its
    summary. The daemon's copy of the last reply, decided on the stale entry (where it would
    complete the saga again), is refused by the version check; on the reloaded summary it is a
    late duplicate: recorded as ignored, and the summary stays as it was."""
    sid = "cached-compacted"
    keys = Keys.of(settings)
    async with running(settings, REGISTRY) as orch:
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        for step, _ in STEPS[:3]:
            await wait_step(reader, sid, step)
            await reply(settings, sid, step)
        await wait_step(reader, sid, "send_confirmation")
        await wait_cached(orch, sid, 4)

        await direct_step(other, sid, "send_confirmation")
        assert await compact_one(other.redis, keys, sid)
        summary = await reader.fields(sid)
        assert SUMMARY in str(await other.redis.hkeys(keys.saga(sid)))

        await reply(settings, sid, "send_confirmation")
        late = f"{sid}:send_confirmation:action:1:reply"

        async def recorded() -> bool:
            return any(h["input"] == late for h in await reader.history(sid))

        await wait_for(recorded, 60, "the late reply recorded")
        await wait_cached(orch, sid, None)
    (entry_of_late,) = [h for h in await reader.history(sid) if h["input"] == late]
    assert entry_of_late["outcome"] == "ignored"
    assert await reader.fields(sid) == summary  # not rewritten: version 5, the summary


async def test_a_revoke_empties_the_cache_and_each_copy_caches_what_it_steps(
    settings: Settings, reader: SagaReader
) -> None:
    """A second copy joins. aiokafka rebalances eagerly (every partition is revoked, then some
    assigned again), so the first copy forgets every saga it held; afterwards each copy caches
    exactly the sagas whose replies (events-topic partition) it steps, and every reply is
    applied once."""
    keys = Keys.of(settings)
    sids = [f"cached-move-{i}" for i in range(9)]
    assert len({keys.partition(s) for s in sids}) == settings.topic_partitions
    async with running(settings, REGISTRY) as first:
        starts = [(s.encode(), start_order(s)) for s in sids]
        await produce(settings, settings.commands_topic, starts)
        for sid in sids:
            await wait_step(reader, sid, "reserve_inventory")
            await wait_cached(first, sid, 1)
        async with running(settings, REGISTRY) as second:

            def events(orch: Orchestrator) -> set[int]:
                return {tp.partition for tp in orch.assigned if tp.topic == settings.events_topic}

            async def split() -> bool:
                return len(events(first) | events(second)) == settings.topic_partitions and not (
                    first.assigned & second.assigned
                )

            await wait_for(split, 90, "the partitions split between the two copies")
            assert events(first) and events(second), (first.assigned, second.assigned)
            assert len(first.cache) == 0, [sid for sid in sids if sid in first.cache]
            for sid in sids:
                await reply(settings, sid, "reserve_inventory")
            for sid in sids:
                await wait_step(reader, sid, "process_payment")
                mine = keys.partition(sid) in events(first)
                await wait_cached(first if mine else second, sid, 2)
                assert sid not in (second if mine else first).cache, sid
    for sid in sids:
        fields = await reader.fields(sid)
        assert (fields["version"], fields["step.reserve_inventory.status"]) == ("2", "completed")
        history = await reader.history(sid)
        assert [h["outcome"] for h in history] == ["applied", "applied"], history


def test_the_daemon_builds_its_cache_from_the_setting(settings: Settings) -> None:
    """SAGA_STATE_CACHE_SIZE reaches the daemon's cache."""
    s = orchestrator_settings(settings, state_cache_size=7)
    orch = Orchestrator(s, with_order_starts(REGISTRY))
    assert orch.cache.size == 7
