"""Record the golden histories of the shipped definitions from real runs, and the redis-cli views
docs/WORKFLOWS.md shows.

    .venv/bin/python -m tests.golden.record [--docs FILE]

Against the real stack (SAGA_KAFKA_BOOTSTRAP_SERVERS / SAGA_REDIS_URL, default the local one):
its own topics and key prefix, the orchestrator in this process running the shipped
`order_fulfillment` and `trip_booking` definitions, the real sample workers, failures injected
through the workers' fault hash. Each saga runs alone (faults apply to the next command of any
saga), then `saga replay --export <id>` (a subprocess, as a person runs it) writes its golden
file under tests/golden/<saga type>/. The approval timeout trip runs under the trip definition
built with a 3 s approval timeout (the shipped default is a day); a timeout's length decides
nothing a history records, so it replays under the shipped one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from infra import kafka
from infra import redis as redis_factory
from orchestrator.core.definition import Registry
from orchestrator.engine.sagas import SagaModules
from participants.keys import SdkKeys
from participants.samples.faults import inject as faults
from participants.samples.order import saga as order_saga
from participants.samples.order.workers import build_all as order_workers
from participants.samples.order.workers import seed_stock
from participants.samples.trip import saga as trip_saga
from participants.samples.trip.config import TripConfig
from participants.samples.trip.workers import build_all as trip_workers
from participants.sdk import run_many
from schemas.config import Settings
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.procs import ROOT, orchestrator_env

HERE = Path(__file__).resolve().parent
MODULES = '["participants.samples.order.saga","participants.samples.trip.saga"]'


def order(sid: str, amount: str = "59.90") -> tuple[bytes, bytes]:
    doc = {"sagaId": sid, "command": "StartOrder", "customerId": "cust-1", "amount": amount,
           "items": [{"productId": "sku-1", "quantity": 1}]}  # fmt: skip
    return sid.encode(), orjson.dumps(doc)


def trip(sid: str, amount: float, **extra: Any) -> tuple[bytes, bytes]:
    doc = {"sagaId": sid, "command": "StartSaga", "sagaType": "trip_booking",
           "data": {"customerId": "c-1", "amount": amount, **extra}}  # fmt: skip
    return sid.encode(), orjson.dumps(doc)


def signal(sid: str, name: str, **data: str) -> tuple[bytes, bytes]:
    doc = {"sagaId": sid, "type": "Signal", "name": name, "messageId": f"{sid}-{name}",
           "sender": "manager", "data": data}  # fmt: skip
    return sid.encode(), orjson.dumps(doc)


class Recorder:
    def __init__(self, settings: Settings, docs: list[str]) -> None:
        self.s = settings
        self.reader = SagaReader(settings)
        self.docs = docs

    async def start(self, topic: str, *records: tuple[bytes, bytes]) -> None:
        await produce(self.s, topic, list(records))

    async def until(self, sid: str, check: Callable[[dict[str, str]], bool], what: str) -> None:
        async def ok() -> bool:
            f = await self.reader.redis.hgetall(self.reader.keys.saga(sid))
            return bool(f) and check(f)

        await wait_for(ok, 180, f"{sid}: {what}", interval_s=0.1)

    async def final(self, sid: str) -> None:
        await self.reader.wait_final([sid], timeout_s=180)

    def export(self, sid: str, saga_type: str, name: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator.ops.cli", "replay", "--export", sid],
            env=orchestrator_env(self.s, SAGA_SAGA_MODULES=MODULES),
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"export of {sid} failed: {proc.stderr}")
        path = HERE / saga_type / f"{name}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text(proc.stdout)
        print(f"{path.relative_to(ROOT)}: {len(proc.stdout.splitlines()) - 1} inputs")

    def redis_cli(self, *args: str) -> None:
        """A redis-cli command and its output, as the docs show it."""
        url = self.s.redis_url
        out = subprocess.run(
            ["redis-cli", "-u", url, *args], capture_output=True, text=True, check=True
        ).stdout
        self.docs.append(f"$ redis-cli {' '.join(args)}\n{out}")

    def view(self, sid: str, history: bool = True) -> None:
        self.redis_cli("HGETALL", self.reader.keys.saga(sid))
        if history:
            self.redis_cli("LRANGE", self.reader.keys.history(sid), "0", "-1")


def sdk(s: Settings, name: str) -> SdkKeys:
    return SdkKeys(s.key_prefix, name)


async def orders(r: Recorder, redis: Any) -> None:
    s = r.s
    c = s.commands_topic
    await r.start(c, order("golden-order-completed"))
    await r.final("golden-order-completed")
    r.export("golden-order-completed", "order_fulfillment", "completed")

    await r.start(c, order("golden-order-declined", amount="20000.00"))  # over the payment limit
    await r.final("golden-order-declined")
    r.export("golden-order-declined", "order_fulfillment", "payment_declined")

    await faults.fail_next(redis, sdk(s, "payment"), 1, retryable=True)
    await r.start(c, order("golden-order-retry"))
    await r.final("golden-order-retry")
    r.export("golden-order-retry", "order_fulfillment", "retry_then_success")

    # the payment worker swallows one command: it times out (30 s, the shipped timeout), the
    # retry is answered
    await faults.no_reply(redis, sdk(s, "payment"), 1)
    await r.start(c, order("golden-order-timeout"))
    await r.final("golden-order-timeout")
    r.export("golden-order-timeout", "order_fulfillment", "payment_timeout")


async def trips(r: Recorder, redis: Any) -> None:
    s, c, e = r.s, r.s.commands_topic, r.s.events_topic
    # the bookings take a second, so the parallel stage can be seen while it runs
    for b in ("flight", "hotel", "car"):
        await faults.latency(redis, sdk(s, b), 1500)
    await r.start(c, trip("trip-small", 200))
    await r.until("trip-small", lambda f: "step.book_car" in f, "its bookings sent")
    r.docs.append("## parallel: the three bookings running\n")
    r.view("trip-small", history=False)
    await r.final("trip-small")
    for b in ("flight", "hotel", "car"):
        await faults.clear(redis, sdk(s, b))
    r.docs.append("## conditions: the small trip, approval skipped\n")
    r.view("trip-small")
    r.export("trip-small", "trip_booking", "small_trip")

    await r.start(c, trip("trip-large", 5000))
    await r.until("trip-large", lambda f: f.get("step.approval", "").startswith("waiting"), "wait")
    r.docs.append("## signals: waiting for approve\n")
    r.view("trip-large")
    await r.start(e, signal("trip-large", "approve", by="manager"))
    await r.final("trip-large")
    r.docs.append("## signals: after approve\n")
    r.view("trip-large")
    r.export("trip-large", "trip_booking", "large_trip_approved")

    await r.start(c, trip("trip-rejected", 1500.5))
    await r.until("trip-rejected", lambda f: f.get("step.approval", "").startswith("waiting"), "w")
    await r.start(e, signal("trip-rejected", "reject", why="too dear"))
    await r.final("trip-rejected")
    r.export("trip-rejected", "trip_booking", "rejected")

    await r.start(c, trip("trip-atlantis", 300, hotel={"city": "Atlantis"}))
    await r.final("trip-atlantis")
    r.docs.append("## a failed branch\n")
    r.view("trip-atlantis")
    r.export("trip-atlantis", "trip_booking", "branch_failure")


async def trip_timeout(r: Recorder) -> None:
    await r.start(r.s.commands_topic, trip("trip-timeout", 5000))
    await r.final("trip-timeout")
    r.export("trip-timeout", "trip_booking", "approval_timeout")


async def main(docs_path: str | None) -> None:
    tag = uuid.uuid4().hex[:8]
    s = Settings(
        kafka_bootstrap_servers=os.environ.get("SAGA_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        redis_url=os.environ.get("SAGA_REDIS_URL", "redis://127.0.0.1:6379/0"),
        commands_topic=f"golden-{tag}-commands",
        events_topic=f"golden-{tag}-events",
        dlq_topic=f"golden-{tag}-dlq",
        key_prefix=f"golden{tag}",
    )
    topics = [s.commands_topic, s.events_topic, s.dlq_topic]
    kafka.create_topics(s, topics, 3)
    docs: list[str] = [f"key prefix {s.key_prefix}\n"]
    r = Recorder(s, docs)
    shipped = SagaModules(
        registry=Registry([order_saga.ORDER_FULFILLMENT, trip_saga.TRIP_BOOKING]),
        starts=dict(order_saga.STARTS),
    )
    short = trip_saga.trip_booking(TripConfig(trip_approval_timeout_s=3))
    stop = asyncio.Event()
    workers = asyncio.create_task(run_many(s, order_workers() + trip_workers(), stop))
    try:
        async with redis_factory.connected(s, decode=True) as redis:
            await seed_stock(s, {"sku-1": 100})
            async with running(s, shipped):
                await orders(r, redis)
                await trips(r, redis)
            async with running(s, SagaModules(registry=Registry([short]))):
                await trip_timeout(r)
    finally:
        stop.set()
        await asyncio.wait_for(workers, 60)
        await r.reader.aclose()
        kafka.delete_topics(s, topics)
    if docs_path:
        Path(docs_path).write_text("\n".join(docs))


def run(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", help="also write the redis-cli views to this file")
    args = p.parse_args(argv)
    asyncio.run(main(args.docs))


if __name__ == "__main__":
    run()
