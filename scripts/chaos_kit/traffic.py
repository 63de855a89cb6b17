"""The seeded load of a chaos run: orders (StartOrder JSON on the commands topic, as a person
would type them), a few deliberately invalid records, the seeded stock and the injected faults."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from infra import kafka
from infra import redis as redis_factory
from participants.keys import SdkKeys
from participants.samples.faults import inject
from participants.samples.order.workers import seed_stock
from schemas.config import Settings

PRODUCTS = tuple(f"sku-{i}" for i in range(8))
#: stock per product as a share of what the orders ask for: the last orders run out
STOCK_SHARE = 0.8
#: (participant, rate, retryable): declines, flaky shipping (retried), failed notifications
FAULTS = (("payment", 0.08, False), ("shipping", 0.15, True), ("notification", 0.05, False))
#: one invalid record after this many orders
INVALID_EVERY = 25
INVALID_PREFIX = "chaos-invalid-"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Order:
    saga_id: str
    customer: str
    items: dict[str, int]
    amount: Decimal

    def record(self) -> bytes:
        doc: dict[str, Any] = {
            "sagaId": self.saga_id,
            "command": "StartOrder",
            "customerId": self.customer,
            "items": [{"productId": p, "quantity": q} for p, q in self.items.items()],
            "amount": str(self.amount),
        }
        return orjson.dumps(doc)


def make_orders(rng: random.Random, seed: int, count: int) -> list[Order]:
    orders = []
    for i in range(count):
        products = rng.sample(PRODUCTS, rng.choice((1, 1, 2)))
        orders.append(
            Order(
                saga_id=f"chaos-{seed}-{i:05d}",
                customer=f"c-{rng.randrange(50)}",
                items={p: rng.randint(1, 3) for p in sorted(products)},
                amount=(Decimal(rng.randint(1000, 50000)) / 100).quantize(CENT),
            )
        )
    return orders


def stock_for(orders: list[Order]) -> dict[str, int]:
    demand = dict.fromkeys(PRODUCTS, 0)
    for o in orders:
        for p, q in o.items.items():
            demand[p] += q
    return {p: int(units * STOCK_SHARE) for p, units in demand.items()}


def invalid_record(n: int) -> tuple[bytes, bytes]:
    """Records the orchestrator must dead-letter: a StartOrder without its fields, or bytes
    that are not JSON. The key names them, so the checker can tell them from valid records."""
    key = f"{INVALID_PREFIX}{n:04d}"
    if n % 2:
        return key.encode(), b"\x00\xffnot json at all " + key.encode()
    return key.encode(), orjson.dumps({"sagaId": key, "command": "StartOrder"})


async def prepare(settings: Settings, stock: dict[str, int]) -> None:
    """Seed the stock (the sample's `seed_stock`) and inject the faults (the faults sample)."""
    await seed_stock(settings, stock)
    async with redis_factory.connected(settings, decode=True) as redis:
        for name, rate, retryable in FAULTS:
            await inject.fail_rate(
                redis, SdkKeys(settings.key_prefix, name), rate, retryable=retryable
            )


class Sender:
    """Produces the orders at a steady pace through broker kills: the producer is idempotent
    and librdkafka retries for up to 5 minutes; a record it still reports failed is sent again
    (a StartOrder twice starts one saga)."""

    def __init__(self, settings: Settings) -> None:
        # log_level 2: the broker kills are planned; librdkafka's reconnect errors are noise
        conf = {"enable.idempotence": True, "linger.ms": 5, "log_level": 2}
        self.producer = kafka.sync_producer(settings, **conf)
        self.topic = settings.commands_topic
        self.acked: set[str] = set()
        self.invalid: set[str] = set()
        self.failed: list[tuple[bytes, bytes]] = []
        self.sent = 0

    def _report(self, err: object, msg: Any) -> None:
        if err is not None:
            self.failed.append((msg.key(), msg.value()))
        elif (key := msg.key().decode()).startswith(INVALID_PREFIX):
            self.invalid.add(key)
        else:
            self.acked.add(key)

    def _send(self, key: bytes, value: bytes) -> None:
        self.producer.produce(self.topic, value, key, on_delivery=self._report)
        self.sent += 1

    def _resend_failed(self) -> None:
        self.producer.poll(0)
        failed, self.failed = self.failed, []
        for key, value in failed:
            self._send(key, value)

    async def run(self, orders: list[Order], over_s: float) -> None:
        """Send `orders` evenly spread over `over_s` seconds, with an invalid record after
        every `INVALID_EVERY` orders."""
        started = time.monotonic()
        gap = over_s / max(1, len(orders))
        for i, order in enumerate(orders):
            self._send(order.saga_id.encode(), order.record())
            if (i + 1) % INVALID_EVERY == 0:
                self._send(*invalid_record((i + 1) // INVALID_EVERY))
            self._resend_failed()
            delay = started + (i + 1) * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def finish(self, timeout_s: float) -> int:
        """Wait until every record is acknowledged; the number still unacknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._resend_failed()
            left = await asyncio.to_thread(self.producer.flush, 1.0)
            if left == 0 and not self.failed:
                return 0
        return len(self.producer) + len(self.failed)
