"""1,000 orders through the orchestrator and the four real workers (separate processes), with
random injected failures (retryable and not), out-of-stock orders, duplicated starts and
commands, and the payment worker SIGKILLed and restarted mid-run. The business invariants hold."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from infra import kafka
from infra import redis as redis_factory
from participants.keys import SdkKeys
from participants.samples.faults import inject as faults
from participants.samples.order.workers import seed_stock, snapshot
from schemas.config import Settings
from schemas.dlq import header
from schemas.headers import H_MESSAGE_TYPE
from tests.conftest import BOTH_REDIS
from tests.support import commands
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader
from tests.support.procs import ROOT, kill, orchestrator_env, start_orchestrator

pytestmark = BOTH_REDIS  # on the single Redis and on the Redis Cluster

N_ORDERS = 1000
PRODUCTS = [f"p{i}" for i in range(10)]
STOCK = 95  # about 100 units of each are ordered: some orders run out of stock
PATIENT = {"SAGA_SAGA_MODULES": '["tests.support.sagas_patient"]'}


def worker(settings: Settings, name: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.ops.cli", "participant", "run", name],
        env=orchestrator_env(settings, **PATIENT),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


async def duplicate_some_commands(settings: Settings, stop: asyncio.Event, rate: float) -> int:
    """Re-produce a share of the participant commands, as a flaky network or relay would."""
    rng = random.Random(7)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    sent = 0
    async with commands.reading(settings) as consumer, kafka.started(producer):
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for rs in batch.values():
                for r in rs:
                    if header(r.headers, H_MESSAGE_TYPE) == "SagaCommand" and rng.random() < rate:
                        # to the topic it was on: its participant's own in per-participant mode
                        await producer.send(r.topic, r.value, r.key, headers=list(r.headers))
                        sent += 1
    return sent


async def test_thousand_orders_keep_the_business_invariants(
    settings: Settings, tmp_path: Path
) -> None:
    """Stock conserved, refunds equal charges for compensated orders, completed orders charged
    once, shipments and notifications exactly where they belong."""
    rng = random.Random(42)
    await seed_stock(settings, dict.fromkeys(PRODUCTS, STOCK))
    redis = redis_factory.client(settings, decode=True)
    await faults.fail_rate(redis, SdkKeys(settings.key_prefix, "payment"), 0.08, retryable=False)
    await faults.fail_rate(redis, SdkKeys(settings.key_prefix, "shipping"), 0.15, retryable=True)
    await faults.fail_rate(
        redis, SdkKeys(settings.key_prefix, "notification"), 0.05, retryable=False
    )

    orders: dict[str, dict[str, object]] = {}
    for i in range(N_ORDERS):
        sid = f"inv-{i:04d}"
        orders[sid] = {
            "sagaId": sid,
            "command": "StartOrder",
            "customerId": f"c{i % 37}",
            "items": [{"productId": rng.choice(PRODUCTS), "quantity": 1}],
            "amount": f"{rng.randint(10, 500)}.{rng.randint(0, 99):02d}",
        }
    records = [(sid.encode(), orjson.dumps(doc)) for sid, doc in orders.items()]

    orch = start_orchestrator(settings, tmp_path / "orchestrator.log", **PATIENT)
    workers = {
        n: worker(settings, n, tmp_path / f"{n}.log")
        for n in ("inventory", "payment", "shipping", "notification")
    }
    stop_dup = asyncio.Event()
    dup_task = asyncio.create_task(duplicate_some_commands(settings, stop_dup, 0.1))
    reader = SagaReader(settings)
    try:
        # every StartOrder twice: the second starts nothing new
        await produce(settings, settings.commands_topic, records + records)

        async def a_third_done() -> bool:
            finished = 0
            for shard in reader.keys.all_shards():  # one index per shard on a Redis Cluster
                for state in ("completed", "failed"):
                    finished += await reader.redis.zcard(reader.keys.index(state, shard))
            return finished >= N_ORDERS // 3

        await wait_for(a_third_done, 240, "a third of the orders to finish")
        kill(workers["payment"], signal.SIGKILL)
        workers["payment"] = worker(settings, "payment", tmp_path / "payment.log")
        states = await reader.wait_final(list(orders), timeout_s=400)
    finally:
        stop_dup.set()
        duplicated = await dup_task
        for p in (orch, *workers.values()):
            if p.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    kill(p, signal.SIGTERM)
        await redis.aclose()

    assert duplicated > 100
    tally = Counter(states.values())
    assert set(tally) <= {"completed", "failed"}, tally
    assert tally["completed"] > N_ORDERS // 2 and tally["failed"] > 50, tally
    completed = {s for s, st in states.items() if st == "completed"}
    failed = {s for s, st in states.items() if st == "failed"}
    ledgers = await snapshot(settings)

    # stock is conserved and stays reserved only for completed orders
    for p in PRODUCTS:
        assert ledgers.total_units(p) == STOCK, p
        held = sum(1 for s in completed if orders[s]["items"][0]["productId"] == p)  # type: ignore[index]
        assert ledgers.reserved.get(p, 0) == held, p

    # refunds equal charges for every compensated order; completed orders are charged once
    net = ledgers.net_paid()
    charges = Counter(e["sagaId"] for e in ledgers.payments if e["type"] == "charge")
    for s in failed:
        assert net.get(s, Decimal(0)) == 0, s
    for s in completed:
        assert charges[s] == 1, s
        assert net[s] == Decimal(str(orders[s]["amount"])), s

    # shipments exist (uncancelled) only for completed orders, one each
    live = {s for s, doc in ledgers.shipments.items() if doc["status"] == "created"}
    assert live == completed

    # one confirmation per completed order; a cancellation notice only where the notification
    # step may have run (it was compensated)
    kinds = Counter((n["type"], n["sagaId"]) for n in ledgers.notifications)
    assert all(kinds[("OrderConfirmation", s)] == 1 for s in completed)
    notified = set()
    for s in failed:
        fields = await reader.fields(s)
        if fields["step.send_confirmation.status"] == "compensated":
            notified.add(s)
    cancelled = {s for (kind, s), n in kinds.items() if kind == "CancellationNotice"}
    assert cancelled <= notified
    assert all(n == 1 for n in kinds.values()), [k for k, n in kinds.items() if n != 1]
    await reader.aclose()
