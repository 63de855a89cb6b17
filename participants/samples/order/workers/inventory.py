"""Inventory: stock per product; a reservation per saga, all items or none.

Redis (under `<prefix>:inventory:`):
  stock         hash  product -> units available
  reserved      hash  product -> units held by active reservations
  reservations  hash  saga id -> {"id", "status": reserved|released, "items": {product: qty}}
  prices        hash  product -> unit price, a decimal with 2 places ("12.50"); read when an
                      order comes without an amount (`start.price_order`), never by the worker
Invariant: stock[p] + reserved[p] stays what was seeded with `set_stock`.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal, InvalidOperation
from typing import Any

from redis.asyncio import Redis

from participants.context import Context
from participants.keys import key_for
from participants.participant import Participant
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers.common import (
    CENT,
    loads_values,
    order_items,
    participant,
    script,
)
from schemas.messages import SagaCommand

NAME = "inventory"
RESERVE = script("inventory_reserve.lua")
RELEASE = script("inventory_release.lua")


def _keys(ctx: Context) -> list[str]:
    # One hash each for all products: a reservation of several products is one atomic call,
    # so on a Redis Cluster they share the participant's slot (docs/PARTICIPANTS.md).
    return [ctx.key(k) for k in ("stock", "reserved", "reservations")]


def build(config: OrderConfig | None = None, http_offset: int = 0) -> Participant:
    """The inventory worker, as `saga participant run inventory` starts it."""
    svc = participant(NAME, config, http_offset)

    @svc.action("ReserveItems")
    async def reserve(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        items = order_items(cmd.data)
        pairs = [x for product, qty in sorted(items.items()) for x in (product, qty)]
        # Deterministic: a second reserve for the saga names the same reservation.
        args = [cmd.saga_id, f"res-{cmd.saga_id}", *pairs]
        return await ctx.atomic(RESERVE, _keys(ctx), args)

    @svc.compensation("ReleaseReservation")
    async def release(cmd: SagaCommand, ctx: Context) -> None:
        rid = (cmd.original_result or {}).get("reservationId", "")
        await ctx.atomic(RELEASE, _keys(ctx), [cmd.saga_id, rid])

    return svc


async def set_stock(redis: Redis, prefix: str, product: str, units: int) -> None:
    """Set the units available for a product (what `saga inventory set-stock` does)."""
    if units < 0:
        raise ValueError("stock cannot be negative")
    await redis.hset(key_for(redis, prefix, NAME, "stock"), product, units)


def valid_price(text: str) -> Decimal:
    """A unit price: a finite decimal from 0 to 1e9 with at most 2 places; ValueError if not."""
    try:
        price = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"invalid price {text[:40]!r}: use a decimal such as 12.50") from None
    if not price.is_finite() or not 0 <= price <= Decimal("1e9") or price != price.quantize(CENT):
        raise ValueError(f"invalid price {text[:40]!r}: 0 to 1e9, at most 2 decimal places")
    return price.quantize(CENT)


async def set_price(redis: Redis, prefix: str, product: str, price: Decimal) -> None:
    """Set a product's unit price (`saga inventory set-stock SKU N --price P`)."""
    await redis.hset(key_for(redis, prefix, NAME, "prices"), product, str(valid_price(str(price))))


async def read_prices(
    redis: Redis, prefix: str, products: list[str] | None = None
) -> dict[str, Decimal]:
    """Unit prices, of `products` or of every product; a product without a valid price (none
    set, or a value written by hand that is not one) is absent."""
    key = key_for(redis, prefix, NAME, "prices")
    if products is None:
        raw: dict[Any, Any] = await redis.hgetall(key)
    else:
        raw = dict(zip(products, await redis.hmget(key, products), strict=True)) if products else {}
    prices = {}
    for product, value in raw.items():
        if value is not None:
            with contextlib.suppress(ValueError):
                prices[_text(product)] = valid_price(_text(value))
    return prices


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def read_stock(redis: Redis, prefix: str) -> dict[str, int]:
    """Units available per product."""
    raw = await redis.hgetall(key_for(redis, prefix, NAME, "stock"))
    return {str(k): int(v) for k, v in raw.items()}


async def read_reserved(redis: Redis, prefix: str) -> dict[str, int]:
    """Units held by active reservations per product."""
    raw = await redis.hgetall(key_for(redis, prefix, NAME, "reserved"))
    return {str(k): int(v) for k, v in raw.items()}


async def read_reservations(redis: Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """saga id -> {"id", "status", "items"}."""
    return loads_values(await redis.hgetall(key_for(redis, prefix, NAME, "reservations")))
