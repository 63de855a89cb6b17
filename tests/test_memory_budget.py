"""Redis bytes per saga, measured with MEMORY USAGE over every key and shared entry the sagas
own, with the real orchestrator and the four real sample workers, on one Redis and on the cluster.

The targets (issue 11) are 1 KiB per four-step order saga in flight and 512 B per completed saga
while it is retained. In flight is measured parked on each step in turn (its worker not running
yet); a completed saga is measured compacted (orchestrator/engine/compact.py, called here as the
relay calls it once SAGA_COMPACT_AFTER_S has passed). Parked on the first step, the figure that
decides the 1M-in-flight memory, must meet the target; the later steps (which hold the step
results) must stay under the ceilings reached so far, and the test reports xfail while one is
above its target (docs/ARCHITECTURE.md, "Memory per saga"), so the day all are met it passes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

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
from tests.conftest import BOTH_REDIS
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.sagas_patient import ORDER_PATIENT

pytestmark = BOTH_REDIS

#: enough sagas that the shared sorted sets leave their small (listpack) encoding, as at scale:
#: the timer sets are per partition (3 here), so over 3 x 128
N = 400
IN_FLIGHT_TARGET, COMPLETED_TARGET = 1024, 512
#: each step and the worker that answers it, in order; the ceilings: the bytes per saga parked
#: on that step, reached so far (a regression fails the test)
STEPS = (
    ("reserve_inventory", "inventory", 1024),
    ("process_payment", "payment", 1100),
    ("create_shipment", "shipping", 1250),
    ("send_confirmation", "notification", 1350),
)
COMPLETED_CEILING = 512  # the target: met on both (511 on the cluster, whose keys are longer)


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
    """N orders parked on each step in turn (its worker not started yet), then completed and
    compacted: bytes per saga at every step and once completed."""
    await seed_stock(settings, {"sku-1": 10 * N, "sku-2": 10 * N})
    keys = Keys.of(settings)
    records = [order(i) for i in range(N)]
    ids = [k.decode() for k, _ in records]
    redis = reader.redis

    def parked_on(step: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            async with redis.pipeline(transaction=False) as p:
                for sid in ids:
                    p.hget(keys.saga(sid), f"step.{step}")  # "running a=1"
                rows = await p.execute()
            outbox = sum([await redis.xlen(keys.outbox_of(p)) for p in keys.all_partitions()])
            return all(r and r.startswith("running ") for r in rows) and outbox == 0

        return check

    in_flight: dict[str, MemoryReport] = {}
    async with running(settings, Registry([ORDER_PATIENT])), contextlib.AsyncExitStack() as stack:
        await produce(settings, settings.commands_topic, records)
        for step, worker, _ in STEPS:
            await wait_for(parked_on(step), 120, f"{N} sagas waiting on {step}", interval_s=0.2)
            in_flight[step] = await measure(redis, keys, ids)
            await stack.enter_async_context(workers(settings, {worker}))
        states = await reader.wait_final(ids, timeout_s=120)
    assert set(states.values()) == {"completed"}
    before = await measure(redis, keys, ids)
    # What the relay does once SAGA_COMPACT_AFTER_S has passed (0 here): every one compacted.
    compacted = 0
    for shard in keys.all_shards():
        compacted += await compact_shard(redis, keys, shard, int(time.time() * 1000), 2 * N)
    assert compacted == N
    completed = await measure(redis, keys, ids)
    for step, report in in_flight.items():
        show(f"in flight, parked on {step}", report)
    show("completed, before compaction", before)
    show("completed, compacted", completed)
    first = STEPS[0][0]
    assert in_flight[first].per_saga <= IN_FLIGHT_TARGET, in_flight[first].breakdown()
    for step, _, ceiling in STEPS:
        assert in_flight[step].per_saga <= ceiling, (step, in_flight[step].breakdown())
    assert completed.per_saga <= COMPLETED_CEILING, completed.breakdown()
    above = {s: round(r.per_saga) for s, r in in_flight.items() if r.per_saga > IN_FLIGHT_TARGET}
    if above or completed.per_saga > COMPLETED_TARGET:
        pytest.xfail(
            f"above target: in flight {above} (target {IN_FLIGHT_TARGET}),"
            f" {completed.per_saga:.0f} B completed (target {COMPLETED_TARGET})"
        )
