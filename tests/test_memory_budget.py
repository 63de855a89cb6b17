"""Redis bytes per saga, measured with MEMORY USAGE over every key and shared entry the sagas
own, with the real orchestrator and the four real sample workers.

The targets (issue 11) are 1 KiB per four-step order saga in flight and 512 B per completed saga
while it is retained. A completed saga is measured compacted (orchestrator/engine/compact.py,
called here as the relay calls it once SAGA_COMPACT_AFTER_S has passed) and meets its target;
the in-flight one is not reached (docs/ARCHITECTURE.md, "Memory per saga"). The test holds the
ceilings reached so far (a regression fails it) and reports xfail while a figure is above its
target, so the day both are met it passes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from orchestrator.core.definition import Registry
from orchestrator.engine.compact import compact_shard
from orchestrator.engine.keys import Keys
from orchestrator.ops.memory import MemoryReport, measure
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers import build_all, seed_stock
from participants.worker import run_many
from schemas.config import Settings
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.sagas_patient import ORDER_PATIENT

#: enough sagas that the shared sorted sets leave their small (listpack) encoding, as at scale:
#: the timer sets are per partition (3 here), so over 3 x 128
N = 400
IN_FLIGHT_TARGET, IN_FLIGHT_CEILING = 1024, 2050
COMPLETED_TARGET, COMPLETED_CEILING = 512, 500
LAST_STEP = "send_confirmation"


def order(i: int) -> tuple[bytes, bytes]:
    """A StartOrder as the reference document's clients send it: customer, two items, amount."""
    sid = f"order-{i:06d}"
    doc = {
        "sagaId": sid,
        "command": "StartOrder",
        "customerId": f"cust-{i % 97}",
        "items": [{"productId": "sku-1", "quantity": 1}, {"productId": "sku-2", "quantity": 2}],
        "amount": "59.90",
    }
    return sid.encode(), orjson.dumps(doc)


@contextlib.asynccontextmanager
async def workers(settings: Settings, names: set[str]) -> AsyncIterator[None]:
    """The named sample workers, in this event loop."""
    stop = asyncio.Event()
    chosen = [p for p in build_all(OrderConfig()) if p.name in names]
    task = asyncio.create_task(run_many(settings, chosen, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def show(what: str, report: MemoryReport) -> None:
    print(f"\n{what}: {report.per_saga:.0f} bytes per saga over {report.sagas}: ")
    print(f"  {report.breakdown()}")


async def test_bytes_per_saga_in_flight_and_completed(
    settings: Settings, reader: SagaReader
) -> None:
    """N orders parked on their last step (its worker not running: the largest in-flight
    state, three results held), then completed once that worker runs: bytes per saga."""
    await seed_stock(settings, {"sku-1": 10 * N, "sku-2": 10 * N})
    keys = Keys.of(settings)
    records = [order(i) for i in range(N)]
    ids = [k.decode() for k, _ in records]
    redis = reader.redis

    async def parked() -> bool:
        async with redis.pipeline(transaction=False) as p:
            for sid in ids:
                p.hget(keys.saga(sid), f"step.{LAST_STEP}")  # "running a=1"
            rows = await p.execute()
        return (
            all(r and r.startswith("running ") for r in rows)
            and sum([await redis.xlen(keys.outbox_of(p)) for p in keys.all_partitions()]) == 0
        )

    async with running(settings, Registry([ORDER_PATIENT])):
        async with workers(settings, {"inventory", "payment", "shipping"}):
            await produce(settings, settings.commands_topic, records)
            await wait_for(parked, 120, f"{N} sagas waiting on {LAST_STEP}", interval_s=0.2)
            in_flight = await measure(redis, keys, ids)
        async with workers(settings, {"notification"}):
            states = await reader.wait_final(ids, timeout_s=120)
    assert set(states.values()) == {"completed"}
    before = await measure(redis, keys, ids)
    # What the relay does once SAGA_COMPACT_AFTER_S has passed (0 here): every one compacted.
    assert await compact_shard(redis, keys, None, int(time.time() * 1000), 2 * N) == N
    completed = await measure(redis, keys, ids)
    show("in flight", in_flight)
    show("completed, before compaction", before)
    show("completed, compacted", completed)
    assert in_flight.per_saga <= IN_FLIGHT_CEILING, in_flight.breakdown()
    assert completed.per_saga <= COMPLETED_CEILING, completed.breakdown()
    if in_flight.per_saga > IN_FLIGHT_TARGET or completed.per_saga > COMPLETED_TARGET:
        pytest.xfail(
            f"above target: {in_flight.per_saga:.0f} B in flight (target {IN_FLIGHT_TARGET}),"
            f" {completed.per_saga:.0f} B completed (target {COMPLETED_TARGET})"
        )
