"""The trip part of `scripts/run` (called by `participants.samples.order.demo`): three trips
sent as raw JSON, the way kcat would send them, and how each ended.

- a small trip (amount 200) completes with no signal;
- a large one (amount 5000) waits for approval; the demo approves it with
  `saga signal <id> approve`, as a person would;
- one whose hotel is in Atlantis fails at booking: its flight and car are cancelled.

`environment()` makes the orchestrator load both samples' saga modules unless
`SAGA_SAGA_MODULES` is already set; `enabled()` says whether the trip saga is among them.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from infra import kafka as kafka_factory
from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from schemas.config import Settings

MODULE = "participants.samples.trip.saga"
BOTH_SAMPLES = orjson.dumps(["participants.samples.order.saga", MODULE]).decode()
FINAL = ("completed", "failed", "needs_intervention")
DEADLINE_S = 120


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with SAGA_SAGA_MODULES naming both samples, unless it names something already."""
    out = dict(env)
    out.setdefault("SAGA_SAGA_MODULES", BOTH_SAMPLES)
    return out


def enabled(env: Mapping[str, str]) -> bool:
    """Whether the orchestrator started with `env` will run trips."""
    try:
        modules = orjson.loads(env.get("SAGA_SAGA_MODULES", "[]"))
    except orjson.JSONDecodeError:
        return False
    return isinstance(modules, list) and MODULE in modules


def demo_trips(run: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(saga id, what should happen, the trip's data)."""
    return [
        (f"trip-{run}-small", "completes, no approval", {"customerId": "demo", "amount": 200}),
        (
            f"trip-{run}-large",
            "waits for approve, then completes",
            {"customerId": "demo", "amount": 5000, "hotel": {"city": "Tokyo", "nights": 4}},
        ),
        (
            f"trip-{run}-atlantis",
            "hotel fails -> flight and car cancelled",
            {"customerId": "demo", "amount": 300, "hotel": {"city": "Atlantis"}},
        ),
    ]


async def _field(redis: Redis, keys: Keys, sid: str, name: str) -> str:
    return str(await redis.hget(keys.saga(sid), name) or "")


async def _until(redis: Redis, keys: Keys, sid: str, name: str, values: tuple[str, ...]) -> str:
    """Poll one field of the saga's hash until it holds one of `values` (or the deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    value = await _field(redis, keys, sid, name)
    while value not in values and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        value = await _field(redis, keys, sid, name)
    return value


async def submit_and_report(settings: Settings, saga_cli: list[str]) -> None:
    """Send the trips, approve the large one through `saga_cli signal`, print how each ended."""
    trips = demo_trips(uuid.uuid4().hex[:6])
    async with kafka_factory.started(kafka_factory.producer(settings)) as producer:
        for sid, _, data in trips:
            doc = {"sagaId": sid, "command": "StartSaga", "sagaType": "trip_booking", "data": data}
            await producer.send_and_wait(settings.commands_topic, orjson.dumps(doc), sid.encode())
    keys = Keys(settings.key_prefix)
    large = trips[1][0]
    async with redis_factory.connected(settings, decode=True) as redis:
        waiting = await _until(redis, keys, large, "step.approval.status", ("waiting",))
        print(f"\n{large}: approval {waiting or 'not reached'}; the demo approves it:")
        print(f"  saga signal {large} approve")
        sent = subprocess.run([*saga_cli, "signal", large, "approve"], check=False, timeout=60)
        # without the approval the large trip waits a day: report it as it is then
        ends = [sid for sid, _, _ in trips if sent.returncode == 0 or sid != large]
        states = {sid: await _until(redis, keys, sid, "state", FINAL) for sid in ends}
        states[large] = states.get(large) or await _field(redis, keys, large, "state")
        print("\ndemo trips:")
        for sid, expect, _ in trips:
            last_error = await _field(redis, keys, sid, "last_error")
            print(f"  {sid:<24} {states[sid] or 'not started':<12} ({expect}) {last_error}")
        print(f"\ninspect one:  redis-cli HGETALL {keys.saga(large)}")
        print(f"its bookings: saga trip show {large}")
