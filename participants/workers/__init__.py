"""The sample participants of the order fulfillment saga, and readers of their state for
demos and invariant checks."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from participants.config import ParticipantConfig
from participants.participant import Participant
from participants.workers import inventory, notification, payment, shipping
from schemas.config import Settings

NAMES = ("inventory", "payment", "shipping", "notification")


def build(name: str, config: ParticipantConfig | None = None) -> Participant:
    """One sample participant by name. `config` carries the payment limit and test card."""
    if name == "inventory":
        return inventory.build()
    if name == "payment":
        if config is None:
            return payment.build()
        return payment.build(config.payment_limit, config.payment_declined_method)
    if name == "shipping":
        return shipping.build()
    if name == "notification":
        return notification.build()
    raise ValueError(f"unknown participant {name!r} (known: {', '.join(NAMES)}, all)")


def build_all(config: ParticipantConfig | None = None) -> list[Participant]:
    return [build(n, config) for n in NAMES]


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
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return await read_ledgers(redis, settings.key_prefix)
    finally:
        await redis.aclose()


async def seed_stock(settings: Settings, stock: dict[str, int]) -> None:
    """Set the units available for several products at once."""
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        for product, units in stock.items():
            await inventory.set_stock(redis, settings.key_prefix, product, units)
    finally:
        await redis.aclose()
