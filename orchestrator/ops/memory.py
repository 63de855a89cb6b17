"""What sagas cost in Redis, measured with `MEMORY USAGE` (exact: `SAMPLES 0`).

A saga owns its own keys (`Keys.owned`) and one entry in each shared structure it sits in
(its state index, the timer set, the outbox). A shared structure is charged to the sagas in it
by count: its whole `MEMORY USAGE` divided by its members. The caller names the sagas and the
shared keys they alone fill (a test's or a bench's own key prefix), so the figure is the cost
per saga with nothing else mixed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from orchestrator.engine.keys import Keys


@dataclass
class MemoryReport:
    sagas: int
    #: bytes of the sagas' own keys, by kind ("saga", "history", ...), summed over the sagas
    own: dict[str, int] = field(default_factory=dict)
    #: bytes of each shared structure (all of it: only these sagas are in it)
    shared: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.own.values()) + sum(self.shared.values())

    @property
    def per_saga(self) -> float:
        return self.total / self.sagas if self.sagas else 0.0

    def breakdown(self) -> dict[str, float]:
        """Bytes per saga by kind, for reports."""
        n = max(1, self.sagas)
        return {k: round(v / n, 1) for k, v in (self.own | self.shared).items()}


async def memory_usage(redis: Redis, key: str) -> int:
    value: Any = await redis.memory_usage(key, samples=0)
    return int(value or 0)


async def measure(redis: Redis, keys: Keys, saga_ids: list[str]) -> MemoryReport:
    """The Redis bytes of `saga_ids`: their own keys, plus every shared structure of `keys`'
    prefix (state indexes, timers, outbox), which must hold these sagas only."""
    report = MemoryReport(len(saga_ids))
    for sid in saga_ids:
        for kind, key in keys.owned(sid).items():
            report.own[kind] = report.own.get(kind, 0) + await memory_usage(redis, key)
    shared = {key: kind for sid in saga_ids for kind, key in keys.shared_per_saga(sid).items()}
    for key, kind in shared.items():  # each shared key once, however many sagas it holds
        report.shared[kind] = report.shared.get(kind, 0) + await memory_usage(redis, key)
    return report
