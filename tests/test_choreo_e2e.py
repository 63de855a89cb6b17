"""The choreography sample and its tracker against the real Kafka and Redis: the three services
react to each other's events with no orchestrator, and the tracker follows them into the saga
hash and history that `saga status` and redis-cli read."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from infra import kafka
from orchestrator.engine import history as saga_history
from orchestrator.engine.keys import Keys
from orchestrator.engine.tracker import Tracker
from participants.keys import domain_key
from participants.samples.choreo.config import ChoreoConfig
from participants.samples.choreo.description import ORDER
from participants.samples.choreo.start import place_order
from participants.samples.choreo.workers import inventory, payment, read_records, shipping
from participants.testing import Raw, RunningWorker, produce, running
from schemas.choreography import encode_event, event_headers
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, H_ERROR_MESSAGE, H_SOURCE, H_TOPIC
from tests.support.kafka import read_all, wait_for
from tests.support.orch import orchestrator_settings
from tests.support.procs import ROOT

FINAL = ("completed", "failed")


@dataclass
class Choreo:
    settings: Settings
    topic: str
    redis: Redis
    tracker: Tracker
    inventory: RunningWorker
    payment: RunningWorker
    shipping: RunningWorker

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    async def place(self, saga_id: str, **data: Any) -> None:
        order = {"items": [{"productId": "sku-1", "quantity": 2}], "amount": "42.50"} | data
        event = place_order(order, saga_id)
        await self.send(encode_event(event), saga_id, event_headers(event))

    async def send(self, value: bytes, key: str | None = None, headers: Any = None) -> None:
        record = Raw(value, key.encode() if key else None, headers)
        await produce(self.settings, [record], topic=self.topic)

    async def final(self, saga_id: str, timeout_s: float = 90) -> dict[str, str]:
        async def ended() -> bool:
            return await self.redis.hget(self.keys.saga(saga_id), "state") in FINAL

        await wait_for(ended, timeout_s, f"the tracker to see {saga_id} end", interval_s=0.1)
        return await self.redis.hgetall(self.keys.saga(saga_id))

    async def history(self, saga_id: str) -> list[dict[str, str]]:
        return await saga_history.read(self.redis, self.keys.history(saga_id))

    async def stock(self) -> int:
        key = domain_key(self.settings.key_prefix, inventory.NAME, "stock")
        return int(await self.redis.hget(key, "sku-1") or 0)

    async def ledger(self) -> list[dict[str, Any]]:
        key = payment.ledger_key(self.settings.key_prefix)
        return [orjson.loads(e) for e in await self.redis.lrange(key, 0, -1)]

    async def records(self, saga_id: str) -> dict[str, Any]:
        return await read_records(self.redis, self.settings.key_prefix, saga_id)


@pytest.fixture
async def choreo(settings: Settings) -> AsyncIterator[Choreo]:
    """The three services and the tracker on this test's own event topic and key prefix."""
    topic = settings.commands_topic.removesuffix("-commands") + "-choreo"
    kafka.create_topics(settings, [topic], 3)
    config = ChoreoConfig(choreo_topic=topic)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    await redis.hset(domain_key(settings.key_prefix, inventory.NAME, "stock"), "sku-1", 10)
    stop = asyncio.Event()
    tracker = Tracker(orchestrator_settings(settings), ORDER, topic, stop)
    task = asyncio.create_task(tracker.run())
    try:
        async with (
            running(settings, inventory.build(config)) as inv,
            running(settings, payment.build(config)) as pay,
            running(settings, shipping.build(config)) as ship,
        ):
            yield Choreo(settings, topic, redis, tracker, inv, pay, ship)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await redis.aclose()
        kafka.delete_topics(settings, [topic])


async def test_happy_path_every_service_acts_once_and_the_tracker_shows_completed(
    choreo: Choreo,
) -> None:
    """OrderPlaced -> reserve -> charge -> ship: the hash is completed with each step's status
    and result, the history lists the four events, and the saga is in the completed index."""
    await choreo.place("ok-1", shippingAddress="1 Main St")
    h = await choreo.final("ok-1")
    assert h["type"] == "order_choreography" and h["mode"] == "choreography"
    assert h["state"] == "completed" and h["current_step"] == "ship"
    assert h["step.reserve"] == 'completed a=1 {"reservationId":"res-ok-1"}'
    assert h["step.charge"] == 'completed a=1 {"chargeId":"ch-ok-1"}'
    assert h["step.ship"] == 'completed a=1 {"trackingNumber":"trk-ok-1"}'
    assert h["version"] == "4" and "last_error" not in h
    history = await choreo.history("ok-1")
    assert [(e["event"], e["outcome"], e["state"]) for e in history] == [
        ("OrderPlaced", "applied", "started"),
        ("InventoryReserved", "applied", "pending"),
        ("PaymentCompleted", "applied", "pending"),
        ("OrderShipped", "applied", "completed"),
    ]
    assert history[-1]["input"] == "ok-1:ship:action:OrderShipped"
    assert await choreo.redis.zscore(choreo.keys.index("completed"), "ok-1") is not None
    assert await choreo.redis.ttl(choreo.keys.saga("ok-1")) > 0  # final: retention applies
    assert await choreo.stock() == 8
    assert await choreo.ledger() == [{"type": "charge", "sagaId": "ok-1", "amount": "42.50"}]
    records = await choreo.records("ok-1")
    assert records["shipment"]["trackingNumber"] == "trk-ok-1"
    for worker in (choreo.inventory, choreo.payment, choreo.shipping):
        assert worker.stats.handled == 1 and worker.stats.errors == 0


async def test_payment_declined_releases_the_inventory_and_the_saga_fails(choreo: Choreo) -> None:
    """PaymentFailed makes inventory release (its compensation): the tracker shows charge
    failed, reserve compensated, the saga failed; the stock is back and nothing was charged."""
    await choreo.place("no-1", paymentMethod="card-declined", shippingAddress="1 Main St")
    h = await choreo.final("no-1")
    assert h["state"] == "failed"
    assert h["step.reserve"].startswith("compensated a=1 c=1 ")
    assert h["step.charge"] == "failed a=1"
    assert h["step.charge.error"] == "declined: payment method 'card-declined' was refused"
    assert h["last_error"] == "charge: declined: payment method 'card-declined' was refused"
    assert "step.ship" not in h  # never begun
    history = await choreo.history("no-1")
    assert [(e["event"], e["state"]) for e in history] == [
        ("OrderPlaced", "started"),
        ("InventoryReserved", "pending"),
        ("PaymentFailed", "compensating"),
        ("InventoryReleased", "failed"),
    ]
    assert await choreo.stock() == 10 and await choreo.ledger() == []
    assert (await choreo.records("no-1"))["reservation"]["status"] == "released"
    assert choreo.shipping.stats.handled == 0


async def test_shipping_failure_refunds_then_releases(choreo: Choreo) -> None:
    """ShippingFailed -> payment refunds -> PaymentRefunded -> inventory releases: compensation
    in reverse order, each step's status in the hash."""
    await choreo.place("ship-1")  # no shipping address
    h = await choreo.final("ship-1")
    assert h["state"] == "failed"
    assert h["step.ship"] == "failed a=1" and h["step.ship.error"] == "no shipping address"
    assert h["step.charge"].startswith("compensated a=1 c=1 ")
    assert h["step.reserve"].startswith("compensated a=1 c=1 ")
    events = [e["event"] for e in await choreo.history("ship-1")]
    assert events[3:] == ["ShippingFailed", "PaymentRefunded", "InventoryReleased"]
    assert [e["type"] for e in await choreo.ledger()] == ["charge", "refund"]
    assert await choreo.stock() == 10


async def test_duplicated_events_act_once_and_are_tracked_once(choreo: Choreo) -> None:
    """The start sent twice with one id and once more without an id: each service acts once
    (the copies are answered from the stored outcome and publish the same event again), and
    the tracker applies each event once (copies are duplicates, the id-less start is a second
    start, recorded as ignored)."""
    event = place_order(
        {
            "items": [{"productId": "sku-1", "quantity": 3}],
            "amount": "9.99",
            "shippingAddress": "x",
        },
        "dup-1",
    )
    value, headers = encode_event(event), event_headers(event)
    without_id = orjson.loads(value)
    del without_id["eventId"]
    await choreo.send(value, "dup-1", headers)
    await choreo.send(value, "dup-1", headers)
    await choreo.send(orjson.dumps(without_id), "dup-1")
    await choreo.final("dup-1")
    stats = choreo.tracker.stats

    async def copies_seen() -> bool:
        # 1 start copy + 2 copies each of InventoryReserved, PaymentCompleted, OrderShipped
        return stats.duplicates >= 7 and stats.ignored >= 1

    await wait_for(copies_seen, 60, "the tracker to see every copy")
    assert (stats.applied, stats.duplicates, stats.ignored) == (4, 7, 1)
    history = await choreo.history("dup-1")
    assert [e["outcome"] for e in history].count("applied") == 4
    ignored = [e for e in history if e["outcome"] == "ignored"]
    assert len(ignored) == 1 and "a second start" in ignored[0]["note"]
    assert ignored[0]["input"].startswith(f"@{choreo.topic}/")  # known by its log position
    assert (await choreo.redis.hgetall(choreo.keys.saga("dup-1")))["version"] == "4"
    assert await choreo.stock() == 7
    assert len(await choreo.ledger()) == 1
    for worker in (choreo.inventory, choreo.payment, choreo.shipping):
        assert worker.stats.handled == 1 and worker.stats.replayed == 2


def _saga(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        SAGA_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        SAGA_REDIS_URL=settings.redis_url,
        SAGA_KEY_PREFIX=settings.key_prefix,
        SAGA_EVENTS_TOPIC=settings.events_topic,
        SAGA_COMMANDS_TOPIC=settings.commands_topic,
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


async def test_saga_status_shows_a_tracked_saga_and_operator_actions_refuse_it(
    choreo: Choreo,
) -> None:
    """`saga status` and `saga list` show the tracked saga like any other; retry, abort,
    resume and signal refuse it, saying why, and send nothing."""
    await choreo.place("st-1", paymentMethod="card-declined", shippingAddress="x")
    await choreo.final("st-1")
    s = choreo.settings
    status = await asyncio.to_thread(_saga, s, "status", "st-1")
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "choreography (tracked: read-only)" in out and "order_choreography" in out
    for line in ("reserve  compensated", "charge   failed"):
        assert line in out
    for event in ("OrderPlaced", "InventoryReserved", "PaymentFailed", "InventoryReleased"):
        assert event in out
    doc = orjson.loads((await asyncio.to_thread(_saga, s, "status", "st-1", "--json")).stdout)
    assert doc["mode"] == "choreography" and doc["state"] == "failed"
    assert {st["name"]: st["status"] for st in doc["steps"]} == {
        "reserve": "compensated",
        "charge": "failed",
    }
    listed = await asyncio.to_thread(_saga, s, "list", "--type", "order_choreography", "--json")
    assert [x["saga_id"] for x in orjson.loads(listed.stdout)] == ["st-1"]
    # a saga still going forward, so that abort and signal are refused for being tracked,
    # not for being final: with inventory stopped, nothing follows its start
    await choreo.inventory.stop()
    await choreo.send(b'{"type":"OrderPlaced","sagaId":"st-2","eventId":"x"}', "st-2")

    async def tracked() -> bool:
        return await choreo.redis.hget(choreo.keys.saga("st-2"), "state") == "started"

    await wait_for(tracked, 60, "st-2 tracked")
    for args in (
        ("abort", "st-2", "--reason", "test"),
        ("retry", "st-2"),
        ("resume", "st-2"),
        ("signal", "st-2", "approve"),
        ("retry", "st-1"),
    ):
        done = await asyncio.to_thread(_saga, s, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "tracked choreography" in done.stderr, (args, done.stderr)
    sent = await read_all(s, s.events_topic, expect=1, timeout_s=3)
    assert sent == []  # nothing reached the orchestrator's topic


async def test_hostile_event_records_are_dead_lettered_once_and_never_block(
    choreo: Choreo,
) -> None:
    """Bad JSON, a missing saga id, an invalid saga id, binary: the tracker dead-letters each
    with its reason (the services skip them). An unknown type is recorded in a tracked saga's
    history, and skipped for an untracked one; a record that says it is no event is skipped;
    an orchestrated saga's hash is never touched. Orders after the poison still complete."""
    orchestrated = choreo.keys.saga("orch-1")
    await choreo.redis.hset(orchestrated, mapping={"type": "order_fulfillment", "state": "pending"})
    poison = [
        (b'{"type":"OrderPlaced","sagaId":', "invalid_json"),
        (b'{"type":"OrderPlaced","data":{}}', "invalid"),
        (b'{"type":"OrderPlaced","sagaId":"has spaces"}', "invalid"),
        (b'{"type":"OrderPlaced","sagaId":"x","sagaID":"y"}', "invalid"),
        (b"\x00\x00\x00\x00\x01binary", "undecodable"),
        (b"[1,2]", "invalid_json"),
        (b'{"sagaId":"no-type"}', "invalid"),
    ]
    for value, _ in poison:
        await choreo.send(value)
    await choreo.send(b'{"type":"Nope","sagaId":"nobody"}', "nobody")
    await choreo.send(b'{"type":"OrderShipped","sagaId":"orch-1"}', "orch-1")
    await choreo.send(b"{}", "h-1", [("saga-message-type", b"SagaCommand")])
    await choreo.place("h-1", shippingAddress="1 Main St")
    await choreo.send(b'{"type":"Bogus","sagaId":"h-1","data":{}}', "h-1")
    assert (await choreo.final("h-1"))["state"] == "completed"

    dead = await read_all(choreo.settings, choreo.settings.dlq_topic, expect=len(poison))
    assert len(dead) == len(poison)
    by_value = {r.value: dict(r.headers) for r in dead}
    for value, kind in poison:
        headers = by_value[value]
        assert headers[H_ERROR_CLASS].decode() == kind
        assert headers[H_SOURCE] == b"tracker:order_choreography"
        assert headers[H_TOPIC].decode() == choreo.topic
    missing = by_value[b'{"type":"OrderPlaced","data":{}}'][H_ERROR_MESSAGE].decode()
    assert missing == "OrderPlaced missing sagaId"

    async def bogus_recorded() -> bool:
        return any(e["event"] == "Bogus" for e in await choreo.history("h-1"))

    await wait_for(bogus_recorded, 30, "the unknown event in h-1's history")

    async def skips_seen() -> bool:  # Nope (untracked), orch-1 (orchestrated), SagaCommand
        return choreo.tracker.stats.skipped >= 3

    await wait_for(skips_seen, 30, "the tracker to skip the three records")
    assert choreo.tracker.stats.skipped == 3
    bogus = next(e for e in await choreo.history("h-1") if e["event"] == "Bogus")
    assert bogus["outcome"] == "ignored" and "not an event of order_choreography" in bogus["note"]
    assert not await choreo.redis.exists(choreo.keys.saga("nobody"))
    assert await choreo.redis.hgetall(orchestrated) == {
        "type": "order_fulfillment",
        "state": "pending",
    }
    assert not await choreo.redis.exists(choreo.keys.history("orch-1"))
    # every service skipped the poison and carried on (nothing dead-lettered twice)
    for worker in (choreo.inventory, choreo.payment, choreo.shipping):
        assert worker.stats.dead_lettered == 0 and worker.stats.errors == 0
    assert choreo.tracker.stats.dead_lettered == len(poison)
