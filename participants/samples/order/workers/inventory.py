"""Inventory: stock per product; a reservation per saga, all items or none.

Redis (under `<prefix>:inventory:`):
  stock         hash  product -> units available
  reserved      hash  product -> units held by active reservations
  reservations  hash  saga id -> {"id", "status": reserved|released, "items": {product: qty}}
Invariant: stock[p] + reserved[p] stays what was seeded with `set_stock`.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from participants.context import Context
from participants.keys import domain_key
from participants.participant import Participant
from participants.samples.order.workers.common import loads_values, order_items, participant, script
from schemas.messages import SagaCommand

NAME = "inventory"
RESERVE = script("inventory_reserve.lua")
RELEASE = script("inventory_release.lua")


def _keys(prefix: str) -> list[str]:
    return [domain_key(prefix, NAME, k) for k in ("stock", "reserved", "reservations")]


def build() -> Participant:
    """The inventory worker, as `saga participant run inventory` starts it."""
    svc = participant(NAME)

    @svc.action("ReserveItems")
    async def reserve(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        items = order_items(cmd.data)
        pairs = [x for product, qty in sorted(items.items()) for x in (product, qty)]
        # Deterministic: a second reserve for the saga names the same reservation.
        args = [cmd.saga_id, f"res-{cmd.saga_id}", *pairs]
        return await ctx.atomic(RESERVE, _keys(ctx.settings.key_prefix), args)

    @svc.compensation("ReleaseReservation")
    async def release(cmd: SagaCommand, ctx: Context) -> None:
        rid = (cmd.original_result or {}).get("reservationId", "")
        await ctx.atomic(RELEASE, _keys(ctx.settings.key_prefix), [cmd.saga_id, rid])

    return svc


async def set_stock(redis: Redis, prefix: str, product: str, units: int) -> None:
    """Set the units available for a product (what `saga inventory set-stock` does)."""
    if units < 0:
        raise ValueError("stock cannot be negative")
    await redis.hset(domain_key(prefix, NAME, "stock"), product, units)


async def read_stock(redis: Redis, prefix: str) -> dict[str, int]:
    """Units available per product."""
    raw = await redis.hgetall(domain_key(prefix, NAME, "stock"))
    return {str(k): int(v) for k, v in raw.items()}


async def read_reserved(redis: Redis, prefix: str) -> dict[str, int]:
    """Units held by active reservations per product."""
    raw = await redis.hgetall(domain_key(prefix, NAME, "reserved"))
    return {str(k): int(v) for k, v in raw.items()}


async def read_reservations(redis: Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """saga id -> {"id", "status", "items"}."""
    return loads_values(await redis.hgetall(domain_key(prefix, NAME, "reservations")))
