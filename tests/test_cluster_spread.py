"""After real sagas ran on the Redis Cluster (the orchestrator and the four sample workers), the
saga keys sit on at least two masters, each saga's keys together; each participant's keys sit
on one master. Every master is asked directly (SCAN on each node, CLUSTER COUNTKEYSINSLOT), not
through the cluster client that wrote the keys."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from orchestrator.core.definition import Registry
from participants.config import WorkerOptions
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers import build_all, seed_stock, snapshot
from participants.worker import run_many
from schemas.config import Settings
from scripts.chaos_kit.traffic import Order
from tests.support.kafka import produce
from tests.support.orch import SagaReader, running
from tests.support.sagas_patient import ORDER_PATIENT

N_ORDERS = 40
PRODUCTS = ("sp-a", "sp-b", "sp-c")


@contextlib.asynccontextmanager
async def sample_workers(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    crew = build_all(OrderConfig(participant_http_port=None))
    task = asyncio.create_task(run_many(settings, crew, stop, WorkerOptions()))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def keys_per_master(url: str, prefix: str) -> dict[str, set[str]]:
    """Each master's address -> the keys under `prefix` it holds, by SCAN on that node."""
    seed = Redis.from_url(url, decode_responses=True)
    try:
        slots = await seed.execute_command("CLUSTER", "SLOTS")
    finally:
        await seed.aclose()
    masters = {(str(entry[2][0]), int(entry[2][1])) for entry in slots}
    out: dict[str, set[str]] = {}
    for host, port in sorted(masters):
        node = Redis(host=host, port=port, decode_responses=True)
        try:
            out[f"{host}:{port}"] = {k async for k in node.scan_iter(match=f"{prefix}:*")}
        finally:
            await node.aclose()
    return out


@pytest.mark.parametrize("redis_mode", ["cluster"], indirect=True)
async def test_saga_keys_spread_over_the_masters(
    settings: Settings, reader: SagaReader, redis_mode: str
) -> None:
    """40 orders through the orchestrator and the sample workers on the cluster: every saga
    completes; its hash and history sit together on one master, the sagas on at least two
    masters; each participant's records and state sit on one master."""
    orders = {
        f"spread-{i:02d}": Order(f"spread-{i:02d}", "c-1", {PRODUCTS[i % 3]: 1}, Decimal(10 + i))
        for i in range(N_ORDERS)
    }
    await seed_stock(settings, dict.fromkeys(PRODUCTS, 100))
    async with running(settings, Registry([ORDER_PATIENT])), sample_workers(settings):
        await produce(
            settings,
            settings.commands_topic,
            [(sid.encode(), o.record()) for sid, o in orders.items()],
        )
        states = await reader.wait_final(list(orders), timeout_s=180)
    assert set(states.values()) == {"completed"}, states
    assert len((await snapshot(settings)).payments) == N_ORDERS

    held = await keys_per_master(settings.redis_url, settings.key_prefix)
    where: dict[str, list[str]] = defaultdict(list)
    for master, keys in held.items():
        for key in keys:
            where[key].append(master)
    saga_masters = set()
    for sid in orders:
        hash_at = where[reader.keys.saga(sid)]
        assert len(hash_at) == 1, (sid, hash_at)
        # the saga's other keys share its slot: the tombstone written at completion, and a
        # history list where there is one (a saga that only went forward keeps none)
        assert where[reader.keys.tombstone(sid)] == hash_at, sid
        assert where.get(reader.keys.history(sid), hash_at) == hash_at, sid
        saga_masters.add(hash_at[0])
    assert len(saga_masters) >= 2, f"every saga on {saga_masters}; masters: {sorted(held)}"

    # the same answer from the slot counts of the masters themselves
    counted: set[str] = set()
    for master in held:
        host, _, port = master.rpartition(":")
        node = Redis(host=host, port=int(port))
        try:
            for sid in orders:
                slot = await node.execute_command("CLUSTER", "KEYSLOT", reader.keys.saga(sid))
                if await node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0:
                    counted.add(master)
        finally:
            await node.aclose()
    assert counted == saga_masters

    for name in ("inventory", "payment", "shipping", "notification"):
        tagged = {m for k, ms in where.items() if f"{{{name}}}" in k for m in ms}
        assert len(tagged) == 1, (name, tagged)
