"""The sample participants of the order fulfillment saga, and readers of their state for
demos and invariant checks."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from infra import redis as redis_factory
from participants.participant import Participant
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers import inventory, notification, payment, shipping
from schemas.config import Settings

#: `run all`: the port of each worker's fail-next-request endpoint, from SAGA_PARTICIPANT_HTTP_PORT
#: up. Payment first, so that the reference document's `curl -X POST
#: http://localhost:8001/api/test/fail-next-request` makes the next order fail at payment and
#: compensate its reservation.
HTTP_PORT_ORDER = ("payment", "inventory", "shipping", "notification")


def build_all(config: OrderConfig | None = None) -> list[Participant]:
    """The four sample participants (`saga participant run all`). `config` defaults to
    `OrderConfig()`, read from the environment. With `SAGA_PARTICIPANT_HTTP_PORT` set, their
    fail-next-request endpoints listen on that port and the next three (`HTTP_PORT_ORDER`)."""
    config = config or OrderConfig()
    offset = {name: i for i, name in enumerate(HTTP_PORT_ORDER)}
    return [
        inventory.build(config, offset[inventory.NAME]),
        payment.build(config, offset[payment.NAME]),
        shipping.build(config, offset[shipping.NAME]),
        notification.build(config, offset[notification.NAME]),
    ]


@dataclass(frozen=True)
class Ledgers:
    """Everything the four sample workers recorded, for invariant checks."""

    stock: dict[str, int]
    reserved: dict[str, int]
    reservations: dict[str, dict[str, Any]]
    charges: dict[str, dict[str, Any]]
    payments: list[dict[str, Any]]
    shipments: dict[str, dict[str, Any]]
    notifications: list[dict[str, Any]]

    def total_units(self, product: str) -> int:
        """Available plus reserved: constant whatever sagas ran."""
        return self.stock.get(product, 0) + self.reserved.get(product, 0)

    def net_paid(self) -> dict[str, Decimal]:
        """Charged minus refunded per saga."""
        return payment.net_by_saga(self.payments)


async def read_ledgers(redis: Redis, prefix: str) -> Ledgers:
    return Ledgers(
        stock=await inventory.read_stock(redis, prefix),
        reserved=await inventory.read_reserved(redis, prefix),
        reservations=await inventory.read_reservations(redis, prefix),
        charges=await payment.read_charges(redis, prefix),
        payments=await payment.read_ledger(redis, prefix),
        shipments=await shipping.read_shipments(redis, prefix),
        notifications=await notification.read_outbox(redis, prefix),
    )


async def snapshot(settings: Settings) -> Ledgers:
    """`read_ledgers` with its own connection, for tests and demo runners."""
    async with redis_factory.connected(settings, decode=True) as redis:
        return await read_ledgers(redis, settings.key_prefix)


async def seed_stock(settings: Settings, stock: dict[str, int]) -> None:
    """Set the units available for several products at once."""
    async with redis_factory.connected(settings, decode=True) as redis:
        for product, units in stock.items():
            await inventory.set_stock(redis, settings.key_prefix, product, units)
