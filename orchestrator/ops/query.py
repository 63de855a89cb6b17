"""Read-only questions about sagas, answered from Redis: status, lists and stuck sagas.

Uses the keys of `orchestrator.engine.keys`: the saga hash, its history and the state indexes
(sorted sets scored by the time, in ms, the saga entered the state). On a Redis Cluster every
shard has its own indexes: lists, counts and the stuck search read them all (`Keys.all_shards`).
Nothing here writes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from orchestrator.core.definition import Registry
from orchestrator.core.model import FINAL, Status
from orchestrator.engine import history as saga_history
from orchestrator.engine.history import HISTORY_CAP
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import from_iso, logical_fields, saga_type_of
from orchestrator.ops import NotFoundError

#: states a saga can be stuck in (not final)
OPEN_STATES = tuple(s.value for s in Status if s not in FINAL)
#: a list shows the first piece of a long `last_error` (statecodec splits values over 64 bytes)
_SUMMARY_FIELDS = (
    *("type", "state", "current_step", "updated_at", "state_entered_at", "last_error"),
    "last_error~2",
)
#: index entries read per round trip while paging (at least, at most)
PAGE_MIN, PAGE_MAX = 100, 1000
_STEP_FIELDS = ("status", "attempts", "compensation_attempts", "error", "result", "may_have_run")


def text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Step:
    name: str
    status: str
    attempts: int
    compensation_attempts: int
    error: str
    result: str
    may_have_run: bool


@dataclass
class SagaStatus:
    saga_id: str
    saga_type: str
    state: str
    current_step: str
    version: int
    created_at: str
    updated_at: str
    state_entered_at: str
    last_error: str
    correlation_id: str
    traceparent: str
    data: str
    steps: list[Step] = field(default_factory=list)
    timeline: list[dict[str, str]] = field(default_factory=list)
    #: "choreography" for a saga the tracker follows (orchestrator.engine.tracker), else ""
    mode: str = ""
    #: the hash's Redis key (`saga:<id>`; `saga:{p7}:<id>` on a Redis Cluster: read it with
    #: `redis-cli -c HGETALL 'saga:{p7}:<id>'`)
    key: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


@dataclass
class SagaSummary:
    saga_id: str
    saga_type: str
    state: str
    current_step: str
    state_entered_at: str
    updated_at: str
    last_error: str
    #: seconds since the saga last changed (any transition)
    idle_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SagaQuery:
    def __init__(self, redis: Redis, keys: Keys, registry: Registry | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.registry = registry

    async def status(self, saga_id: str, history_limit: int = HISTORY_CAP) -> SagaStatus:
        raw = await self.redis.hgetall(self.keys.saga(saga_id))
        if not raw:
            raise NotFoundError(f"no saga {saga_id!r} (unknown id, or it expired)")
        fields = {text(k): text(v) for k, v in raw.items()}
        definition = None  # a compacted saga's steps are named by its definition (statecodec)
        with contextlib.suppress(ValueError):  # a definition_version edited by hand
            t = saga_type_of(fields)
            definition = self.registry.version(*t) if self.registry is not None and t else None
        f = logical_fields(fields, definition, saga_id)
        timeline = await saga_history.read(self.redis, self.keys.history(saga_id), history_limit)
        return SagaStatus(
            saga_id=f.get("saga_id", saga_id),
            saga_type=f.get("type", ""),
            state=f.get("state", ""),
            current_step=f.get("current_step", ""),
            version=int(f.get("version", "0") or 0),
            created_at=f.get("created_at", ""),
            updated_at=f.get("updated_at", ""),
            state_entered_at=f.get("state_entered_at", ""),
            last_error=f.get("last_error", ""),
            correlation_id=f.get("correlation_id", ""),
            traceparent=f.get("traceparent", ""),
            data=f.get("data", ""),
            steps=self._steps(f),
            timeline=timeline,
            mode=f.get("mode", ""),
            key=self.keys.saga(saga_id),
        )

    def _steps(self, f: dict[str, str]) -> list[Step]:
        names: list[str] = []
        definition = None
        if self.registry is not None and f.get("type"):
            definition = self.registry.version(f["type"], int(f.get("definition_version", "1")))
        if definition is not None:
            names = [s.name for s in definition.steps]
        else:  # a type this process does not know: the steps as the hash names them
            for k in f:
                if k.startswith("step.") and k.endswith(".status"):
                    names.append(k[len("step.") : -len(".status")])
        out = []
        for n in names:
            p = f"step.{n}."
            out.append(
                Step(
                    name=n,
                    status=f.get(p + "status", "pending"),
                    attempts=int(f.get(p + "attempts", "0") or 0),
                    compensation_attempts=int(f.get(p + "compensation_attempts", "0") or 0),
                    error=f.get(p + "error", ""),
                    result=f.get(p + "result", ""),
                    may_have_run=f.get(p + "may_have_run") == "yes",
                )
            )
        return out

    async def exists(self, saga_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.saga(saga_id)))

    async def find(
        self,
        states: tuple[str, ...] | list[str] | None = None,
        saga_type: str | None = None,
        older_than_ms: int = 0,
        limit: int = 100,
    ) -> list[SagaSummary]:
        """Up to `limit` sagas in the given states (all by default), of `saga_type` when given,
        that entered their state more than `older_than_ms` ago, oldest first. The type is
        filtered while the indexes are paged, so sagas of other types never use up the limit."""

        def wanted(s: SagaSummary, _score: float) -> bool:
            return not saga_type or s.saga_type == saga_type

        cutoff = now_ms() - older_than_ms
        return await self._select(states or [st.value for st in Status], cutoff, wanted, limit)

    async def stuck(self, older_than_ms: int, limit: int = 1000) -> list[SagaSummary]:
        """Up to `limit` sagas not final and without any transition for longer than the bound,
        oldest in their state first, however many healthy sagas are older.

        The index score is the time a saga entered its state, which does not move while a
        pending saga advances from step to step; the hash's `updated_at` decides. A saga's last
        transition is never before it entered its state, so only sagas that entered it before
        the cutoff can be stuck: each open state's index is paged from its oldest entry up to
        the cutoff until `limit` stuck sagas are found or the candidates run out."""
        cutoff = now_ms() - older_than_ms

        def idle(s: SagaSummary, entered_ms: float) -> bool:
            return (from_iso(s.updated_at) if s.updated_at else entered_ms) <= cutoff

        return await self._select(OPEN_STATES, cutoff, idle, limit)

    async def _select(
        self,
        states: tuple[str, ...] | list[str],
        cutoff_ms: int,
        wanted: Callable[[SagaSummary, float], bool],
        limit: int,
    ) -> list[SagaSummary]:
        """The `limit` oldest sagas `wanted` among those that entered one of `states` at or
        before `cutoff_ms`. Each state's index gives its `limit` oldest wanted ones; the oldest
        of those, across states, are the answer."""
        found: list[tuple[float, SagaSummary]] = []
        page = min(max(limit, PAGE_MIN), PAGE_MAX)
        for state in states:
            for shard in self.keys.all_shards():
                matches = 0
                pages = self._pages(self.keys.index(state, shard), cutoff_ms, page)
                async with contextlib.aclosing(pages):
                    async for rows in pages:
                        scores = dict(rows)
                        for s in await self._summaries(list(scores)):
                            if matches < limit and wanted(s, scores[s.saga_id]):
                                found.append((scores[s.saga_id], s))
                                matches += 1
                        if matches >= limit:
                            break
        found.sort(key=lambda row: row[0])
        return [s for _, s in found[:limit]]

    async def _pages(
        self, index: str, max_score: int, page: int
    ) -> AsyncGenerator[list[tuple[str, float]]]:
        """(saga id, score) of an index's members scored at most `max_score`, oldest first,
        `page` (or a few more) per round trip. Paged by score, not by offset: each page starts
        strictly after the last score read, having read all the members that share it, so a
        member leaving the index meanwhile cannot make the scan skip another."""
        low = "-inf"
        while True:
            rows: list[Any] = await self.redis.zrangebyscore(
                index, low, max_score, start=0, num=page, withscores=True
            )
            out = [(text(member), float(score)) for member, score in rows]
            if len(out) < page:
                if out:
                    yield out
                return
            last = out[-1][1]
            tie: list[Any] = await self.redis.zrangebyscore(index, last, last, withscores=True)
            yield [r for r in out if r[1] < last] + [(text(m), float(s)) for m, s in tie]
            low = f"({last!r}"

    async def _summaries(self, saga_ids: list[str]) -> list[SagaSummary]:
        if not saga_ids:
            return []
        async with self.redis.pipeline(transaction=False) as p:
            for sid in saga_ids:
                p.hmget(self.keys.saga(sid), list(_SUMMARY_FIELDS))
            rows = await p.execute()
        now = now_ms()
        out = []
        for sid, row in zip(saga_ids, rows, strict=True):
            if row[1] is None:  # expired since the index was read
                continue
            saga_type, state, step, updated, entered, error, more = (text(v or b"") for v in row)
            entered = entered or updated  # left out while equal (statecodec)
            error += "..." if more else ""
            out.append(
                SagaSummary(
                    sid,
                    saga_type,
                    state,
                    step,
                    entered,
                    updated,
                    error,
                    round((now - from_iso(updated)) / 1000, 3) if updated else 0.0,
                )
            )
        return out

    async def correlation_ids(self, saga_ids: list[str]) -> dict[str, str]:
        """Each existing saga's correlation id, in one round trip (the hash leaves it out while
        it is the saga id, statecodec); sagas gone meanwhile are left out."""
        async with self.redis.pipeline(transaction=False) as p:
            for sid in saga_ids:
                p.hmget(self.keys.saga(sid), ["correlation_id", "type"])
            rows = await p.execute()
        return {sid: text(c) if c else sid for sid, (c, t) in zip(saga_ids, rows, strict=True) if t}

    async def counts_by_state(self) -> dict[str, int]:
        shards = self.keys.all_shards()
        async with self.redis.pipeline(transaction=False) as p:
            for s in Status:
                for shard in shards:
                    p.zcard(self.keys.index(s.value, shard))
            rows = await p.execute()
        n = len(shards)
        return {s.value: sum(map(int, rows[i * n : i * n + n])) for i, s in enumerate(Status)}

    async def entered_between(self, state: str, low_ms: int, high_ms: int) -> int:
        """Sagas that entered `state` between the two times (the index score), every shard."""
        async with self.redis.pipeline(transaction=False) as p:
            for shard in self.keys.all_shards():
                p.zcount(self.keys.index(state, shard), low_ms, high_ms)
            rows = await p.execute()
        return sum(int(n) for n in rows)

    async def outbox_depth(self) -> int:
        """Commands written and not yet acknowledged, in every partition's outbox (and the
        global one older versions wrote, on one Redis)."""
        keys = [self.keys.outbox_of(p) for p in self.keys.all_partitions()]
        async with self.redis.pipeline(transaction=False) as p:
            for key in keys if self.keys.shards else [*keys, self.keys.old_outbox]:
                p.xlen(key)
            rows = await p.execute()
        return sum(int(n) for n in rows)

    async def newest(self, state: str, count: int) -> list[str]:
        """Up to `count` ids of the sagas that entered `state` last, from each shard."""
        out: list[str] = []
        for shard in self.keys.all_shards():
            ids: list[Any] = await self.redis.zrevrange(self.keys.index(state, shard), 0, count - 1)
            out += [text(i) for i in ids]
        return out
