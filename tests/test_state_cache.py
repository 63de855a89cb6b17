"""The partition owner's state cache (orchestrator/engine/cache.py) on its own: the LRU bound,
what it refuses to keep (final sagas, size 0), dropping by partition, and the rebalance
listener emptying it for revoked partitions. No Kafka or Redis."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from orchestrator.config import OrchestratorSettings
from orchestrator.core.model import SagaState, Status, StepState
from orchestrator.engine.cache import StateCache
from orchestrator.engine.ownership import Rebalance
from orchestrator.telemetry.metrics import Metrics

PARTS = 3


def part(sid: str) -> int:
    return int(sid.rsplit("-", 1)[1]) % PARTS


def saga(sid: str, status: Status = Status.STARTED, version: int = 1) -> SagaState:
    return SagaState(sid, "t", 1, status, 0, (StepState(),), {}, version=version)


def fields(state: SagaState) -> dict[str, str]:
    return {"type": state.saga_type, "state": state.status.value, "version": str(state.version)}


def put(cache: StateCache, sid: str, **kw: object) -> SagaState:
    s = saga(sid, **kw)  # type: ignore[arg-type]
    cache.put(s, fields(s))
    return s


def test_the_least_recently_used_saga_leaves_first_and_the_bound_holds() -> None:
    """At most `size` entries; a get refreshes an entry, so the one neither written nor read
    for longest is the one that goes."""
    cache = StateCache(3, part)
    for i in range(3):
        put(cache, f"s-{i}")
    assert cache.get("s-0") is not None  # s-0 is now the most recent
    put(cache, "s-3")
    assert len(cache) == 3
    assert "s-1" not in cache
    assert all(f"s-{i}" in cache for i in (0, 2, 3))
    for i in range(4, 100):
        put(cache, f"s-{i}")
        assert len(cache) == 3
    assert [sid for sid in ("s-97", "s-98", "s-99") if sid in cache] == ["s-97", "s-98", "s-99"]


def test_an_entry_is_the_last_write_and_counts_hits_and_misses() -> None:
    """A second put replaces the entry (state and fields together); gets count."""
    cache = StateCache(10, part)
    assert cache.get("s-1") is None
    put(cache, "s-1", version=1)
    v2 = put(cache, "s-1", version=2)
    entry = cache.get("s-1")
    assert entry is not None
    assert entry.state == v2 and entry.fields["version"] == "2"
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED])
def test_a_final_saga_leaves_the_cache(status: Status) -> None:
    """A final saga takes no more steps and compaction rewrites it without a new version:
    never kept, and its earlier entry goes."""
    cache = StateCache(10, part)
    s = put(cache, "s-1")
    cache.put(replace(s, status=status, version=2), fields(s))
    assert "s-1" not in cache
    put(cache, "s-2", status=status)
    assert len(cache) == 0


def test_size_zero_keeps_nothing_and_a_negative_size_is_refused() -> None:
    """0 turns the cache off (every input reads Redis); below 0 is a clear error, and so is
    the setting."""
    cache = StateCache(0, part)
    put(cache, "s-1")
    assert len(cache) == 0 and cache.get("s-1") is None
    with pytest.raises(ValueError, match="0 or more"):
        StateCache(-1, part)
    with pytest.raises(ValidationError, match="state_cache_size"):
        OrchestratorSettings(state_cache_size=-1)
    with pytest.raises(ValidationError, match="state_cache_size"):
        OrchestratorSettings(state_cache_size="many")  # type: ignore[arg-type]
    assert OrchestratorSettings(state_cache_size=0).state_cache_size == 0


def test_drop_partitions_forgets_only_those_partitions_sagas() -> None:
    cache = StateCache(100, part)
    for i in range(30):
        put(cache, f"s-{i}")
    assert cache.drop_partitions([1]) == 10
    assert sorted({part(f"s-{i}") for i in range(30) if f"s-{i}" in cache}) == [0, 2]
    assert cache.drop_partitions([]) == 0
    assert cache.drop_partitions([7]) == 0  # not a partition we hold: nothing
    assert len(cache) == 20


def test_the_rebalance_listener_empties_the_cache_for_revoked_partitions() -> None:
    """The listener drops the revoked partitions' sagas (of either topic: a saga's partition
    is the same number in both) once the batch in flight is done, and keeps the others."""

    class NoRelay:
        def revoke(self, partitions: object) -> None:
            pass

    async def scenario() -> StateCache:
        cache = StateCache(100, part)
        for i in range(9):
            put(cache, f"s-{i}")
        lock = asyncio.Lock()
        tps = {TopicPartition(t, p) for t in ("cmd", "ev") for p in range(PARTS)}
        listener = Rebalance(lock, tps, NoRelay(), "ev", cache.drop_partitions)  # type: ignore[arg-type]
        async with lock:  # a batch in flight: the drop waits for it
            task = asyncio.create_task(listener.on_partitions_revoked({TopicPartition("cmd", 2)}))
            await asyncio.sleep(0)
            assert len(cache) == 9
        await task
        return cache

    cache = asyncio.run(scenario())
    assert [i for i in range(9) if f"s-{i}" in cache] == [0, 1, 3, 4, 6, 7]


def test_the_hits_and_misses_are_in_metrics() -> None:
    """`/metrics` shows both counters (the daemon copies the cache's counts after each load)."""
    text = Metrics(state_cache_hits=3, state_cache_misses=2).render()
    assert re.search(r"^saga_state_cache_hits_total 3$", text, re.MULTILINE), text
    assert re.search(r"^saga_state_cache_misses_total 2$", text, re.MULTILINE), text
