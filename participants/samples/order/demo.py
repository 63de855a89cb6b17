"""`scripts/run`: the orchestrator and the four sample workers in the foreground, a few demo
orders (one completes, one is compensated after a payment decline, one after out-of-stock),
their final states printed, then running until Ctrl-C. The trip sample runs beside it (its four
workers, three demo trips: `participants.samples.trip.demo`) unless SAGA_SAGA_MODULES is set
without it.

    python -m participants.samples.order.demo [--no-demo]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson

from infra import kafka as kafka_factory
from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from participants.samples.order.workers import seed_stock
from participants.samples.trip import demo as trip_demo
from schemas.config import Settings

FINAL = ("completed", "failed", "needs_intervention")


def demo_orders(run: str) -> list[tuple[str, str, dict[str, object]]]:
    base: dict[str, object] = {
        "command": "StartOrder",
        "customerId": "demo-customer",
        "amount": "59.90",
    }
    return [
        (
            f"demo-{run}-ok",
            "completes",
            {**base, "items": [{"productId": "demo-sku", "quantity": 1}]},
        ),
        (
            f"demo-{run}-declined",
            "payment declined -> compensated",
            {
                **base,
                "items": [{"productId": "demo-sku", "quantity": 1}],
                "paymentMethod": "card-declined",
            },
        ),
        (
            f"demo-{run}-oos",
            "out of stock -> compensated",
            {**base, "items": [{"productId": "demo-sold-out", "quantity": 1}]},
        ),
    ]


async def submit_and_report(settings: Settings) -> None:
    await seed_stock(settings, {"demo-sku": 100, "demo-sold-out": 0})
    run = uuid.uuid4().hex[:6]
    orders = demo_orders(run)
    async with kafka_factory.started(kafka_factory.producer(settings)) as producer:
        for sid, _, doc in orders:
            await producer.send_and_wait(
                settings.commands_topic, orjson.dumps({"sagaId": sid, **doc}), sid.encode()
            )
    keys = Keys.of(settings)
    deadline = time.monotonic() + 120
    async with redis_factory.connected(settings, decode=True) as redis:
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {
                sid: str(await redis.hget(keys.saga(sid), "state") or "") for sid, _, _ in orders
            }
            if all(s in FINAL for s in states.values()):
                break
            await asyncio.sleep(0.2)
        print("\ndemo orders:")
        for sid, expect, _ in orders:
            last_error = str(await redis.hget(keys.saga(sid), "last_error") or "")
            print(f"  {sid:<24} {states.get(sid) or 'not started':<12} ({expect}) {last_error}")
        sid = orders[1][0]
        cli = "redis-cli -c" if keys.shards else "redis-cli"  # -c: follow the cluster's moves
        print(f"\ninspect one:  {cli} HGETALL '{keys.saga(sid)}'")
        print(f"its history:  {cli} LRANGE '{keys.history(sid)}' 0 -1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--no-demo", action="store_true", help="run the services without submitting orders"
    )
    args = ap.parse_args()
    settings = Settings()
    saga = [sys.executable, "-m", "orchestrator.ops.cli"]
    env = trip_demo.environment(os.environ)
    trips = trip_demo.enabled(env)
    procs = [
        subprocess.Popen([*saga, "orchestrator", "run"], env=env),
        subprocess.Popen([*saga, "participant", "run", "all"], env=env),
    ]
    if trips:
        procs.append(subprocess.Popen([*saga, "participant", "run", "trip"], env=env))
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not args.no_demo:
            asyncio.run(submit_and_report(settings))
            if trips:
                asyncio.run(trip_demo.submit_and_report(settings, saga))
        print("\norchestrator and participants running; Ctrl-C stops them")
        while not stop["now"] and all(p.poll() is None for p in procs):
            time.sleep(0.5)  # the main thread only waits for Ctrl-C or a child to exit
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        print("stopped")


if __name__ == "__main__":
    main()
