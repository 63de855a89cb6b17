"""The figures the dashboard shows that no CLI command prints, built on `SagaQuery` and the
same Redis indexes and Kafka topic: the overview numbers, a search by correlation id, and the
dead-letter topic's size.

Everything here reads; each figure that would need a full scan is capped and says so
(`Capped`), so a page never costs more than a few thousand Redis reads however many sagas
there are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

from infra import kafka as kafka_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.core.model import Status
from orchestrator.engine.statecodec import from_iso
from orchestrator.ops import NotFoundError
from orchestrator.ops.query import SagaQuery, SagaStatus, SagaSummary, now_ms

#: sagas read per state to count them by type (the overview says when a state holds more)
TYPE_SAMPLE = 1000
#: the stuck count stops here (the stuck page lists them)
STUCK_CAP = 1000
#: newest sagas per state a correlation-id search looks through
SEARCH_CAP = 5000


@dataclass
class Capped:
    """A count that stopped at a cap: `at_least` is true when there may be more."""

    n: int
    at_least: bool = False

    def __str__(self) -> str:
        return f"{self.n}+" if self.at_least else str(self.n)


@dataclass
class Overview:
    by_state: dict[str, int]
    by_type: dict[str, dict[str, Capped]]
    completed_last_minute: int
    failed_last_minute: int
    stuck: Capped
    needs_intervention: int
    dlq_size: int | None
    dlq_problem: str = ""
    types: list[str] = field(default_factory=list)


async def overview(q: SagaQuery, settings: OrchestratorSettings) -> Overview:
    by_state = await q.counts_by_state()
    by_type: dict[str, dict[str, Capped]] = {}
    for state, n in by_state.items():
        if not n:
            continue
        sample = await q.find([state], None, 0, TYPE_SAMPLE)
        for saga_type, count in Counter(s.saga_type for s in sample).items():
            by_type.setdefault(saga_type or "(none)", {})[state] = Capped(count, n > TYPE_SAMPLE)
    # the bound /metrics and the SagaStuck alert use, so the page and the alert agree
    stuck = await q.stuck(round(settings.stuck_after_s * 1000), STUCK_CAP)
    done, failed = await per_minute(q)
    size, problem = await dlq_size(settings)
    return Overview(
        by_state=by_state,
        by_type=by_type,
        completed_last_minute=done,
        failed_last_minute=failed,
        stuck=Capped(len(stuck), len(stuck) >= STUCK_CAP),
        needs_intervention=by_state.get(Status.NEEDS_INTERVENTION.value, 0),
        dlq_size=size,
        dlq_problem=problem,
        types=sorted(by_type),
    )


async def per_minute(q: SagaQuery) -> tuple[int, int]:
    """Sagas that completed and failed in the last 60 s, by the time they entered the state
    (the index score); for the whole cluster, not one orchestrator copy."""
    now = now_ms()
    done = await q.entered_between(Status.COMPLETED.value, now - 60_000, now)
    failed = await q.entered_between(Status.FAILED.value, now - 60_000, now)
    return done, failed


async def dlq_size(
    settings: OrchestratorSettings, timeout_s: float = 5.0
) -> tuple[int | None, str]:
    """Records in the dead-letter topic (end minus beginning offsets of every partition), or
    None and why when Kafka did not answer in time."""
    c = kafka_factory.consumer(settings, group_id=None)
    try:
        async with asyncio.timeout(timeout_s):
            await c.start()
            if settings.dlq_topic not in await c.topics():  # first: subscribing may create it
                return None, f"no topic {settings.dlq_topic!r}"
            c.subscribe([settings.dlq_topic])  # without a group: every partition, once known
            while not c.assignment():
                await asyncio.sleep(0.01)  # the metadata arriving, within the timeout above
            tps = sorted(c.assignment())
            begin = await c.beginning_offsets(tps)
            end = await c.end_offsets(tps)
            return sum(end[tp] - begin[tp] for tp in tps), ""
    except Exception as exc:  # the overview shows the other figures without it
        return None, f"Kafka did not answer: {type(exc).__name__}"
    finally:
        await c.stop()


async def by_correlation_id(
    q: SagaQuery, needle: str, limit: int
) -> tuple[list[SagaSummary], bool]:
    """Sagas whose correlation id is `needle`, among the newest `SEARCH_CAP` of each state (no
    index holds correlation ids); and whether some state held more than were searched."""
    found: list[str] = []
    capped = False
    for state in Status:
        ids = await q.newest(state.value, SEARCH_CAP)  # from each shard
        if len(ids) >= SEARCH_CAP:
            capped = True
        corr = await q.correlation_ids(ids)
        found += [sid for sid, c in corr.items() if c == needle]
        if len(found) >= limit:
            break
    out = []
    for sid in found[:limit]:
        with contextlib.suppress(NotFoundError):  # expired since the index was read
            out.append(summary(await q.status(sid, history_limit=1)))
    return out, capped


def summary(s: SagaStatus) -> SagaSummary:
    """The list row of one saga read in full."""
    idle = round((now_ms() - from_iso(s.updated_at)) / 1000, 3) if s.updated_at else 0.0
    return SagaSummary(
        s.saga_id,
        s.saga_type,
        s.state,
        s.current_step,
        s.state_entered_at,
        s.updated_at,
        s.last_error,
        idle,
    )
