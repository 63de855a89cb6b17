"""Read-only questions about sagas, answered from Redis: status, lists and stuck sagas.

Uses the keys of `orchestrator.engine.keys`: the saga hash, its history stream and the state indexes
(sorted sets scored by the time, in ms, the saga entered the state). Nothing here writes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from orchestrator.core.definition import Registry
from orchestrator.core.model import FINAL, Status
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import from_iso
from orchestrator.ops import NotFoundError

#: states a saga can be stuck in (not final)
OPEN_STATES = tuple(s.value for s in Status if s not in FINAL)
_SUMMARY_FIELDS = ("type", "state", "current_step", "updated_at", "state_entered_at", "last_error")
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

    async def status(self, saga_id: str, history_limit: int = 1000) -> SagaStatus:
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(self.keys.saga(saga_id))
            p.xrange(self.keys.history(saga_id), count=history_limit)
            raw, history = await p.execute()
        if not raw:
            raise NotFoundError(f"no saga {saga_id!r} (unknown id, or it expired)")
        f = {text(k): text(v) for k, v in raw.items()}
        timeline = [{text(k): text(v) for k, v in entry.items()} for _, entry in history]
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
        """Sagas in the given states (all by default) that entered them more than
        `older_than_ms` ago, oldest first."""
        cutoff = now_ms() - older_than_ms
        ids: list[tuple[float, str]] = []
        async with self.redis.pipeline(transaction=False) as p:
            for s in states or [st.value for st in Status]:
                p.zrangebyscore(
                    self.keys.index(s), "-inf", cutoff, start=0, num=limit, withscores=True
                )
            for rows in await p.execute():
                ids += [(score, text(member)) for member, score in rows]
        ids.sort()
        summaries = await self._summaries([sid for _, sid in ids])
        if saga_type:
            summaries = [s for s in summaries if s.saga_type == saga_type]
        return summaries[:limit]

    async def stuck(self, older_than_ms: int, limit: int = 1000) -> list[SagaSummary]:
        """Sagas not final and without any transition for longer than the bound.

        The index score is the time a saga entered its state, which does not move while a
        pending saga advances from step to step; so the index narrows the candidates and the
        hash's `updated_at` decides."""
        candidates = await self.find(OPEN_STATES, None, older_than_ms, limit)
        bound_s = older_than_ms / 1000
        return [s for s in candidates if s.idle_s >= bound_s]

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
            saga_type, state, step, updated, entered, error = (text(v or b"") for v in row)
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

    async def counts_by_state(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as p:
            for s in Status:
                p.zcard(self.keys.index(s.value))
            rows = await p.execute()
        return {s.value: int(n) for s, n in zip(Status, rows, strict=True)}
