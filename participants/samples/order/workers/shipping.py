"""Shipping: one shipment per saga, cancellable (idempotently).

Redis (under `<prefix>:shipping:`):
  shipments  hash  saga id -> {"trackingNumber", "orderId", "status": created|cancelled}
Written through `ctx.tx`: the SDK applies the write in the same atomic step as the outcome.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from redis.asyncio import Redis

from participants.context import Context
from participants.errors import NonRetryableError
from participants.keys import key_for
from participants.participant import Participant
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers.common import dumps, loads_values, participant, text
from schemas.messages import SagaCommand

NAME = "shipping"


def tracking_number(saga_id: str) -> str:
    return "TRK" + hashlib.sha256(saga_id.encode()).hexdigest()[:12].upper()


def build(config: OrderConfig | None = None, http_offset: int = 0) -> Participant:
    """The shipping worker, as `saga participant run shipping` starts it."""
    svc = participant(NAME, config, http_offset)

    @svc.action("CreateShipment")
    async def create(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        key = ctx.key("shipments")
        raw = await ctx.redis.hget(key, cmd.saga_id)
        if raw:
            existing = orjson.loads(raw)
            if existing["status"] == "cancelled":
                raise NonRetryableError("the shipment for this order was cancelled")
            return {"trackingNumber": existing["trackingNumber"]}
        tracking = tracking_number(cmd.saga_id)
        order_id = text(cmd.data, "orderId", cmd.saga_id)
        doc = {"trackingNumber": tracking, "orderId": order_id, "status": "created"}
        ctx.tx.call("HSET", key, cmd.saga_id, dumps(doc))
        return {"trackingNumber": tracking}

    @svc.compensation("CancelShipment")
    async def cancel(cmd: SagaCommand, ctx: Context) -> None:
        key = ctx.key("shipments")
        raw = await ctx.redis.hget(key, cmd.saga_id)
        if raw is None:
            # Cancelled before it was created: remember it, so a late create is refused.
            tracking = (cmd.original_result or {}).get("trackingNumber", "")
            doc: dict[str, Any] = {"trackingNumber": tracking, "orderId": "", "status": "cancelled"}
        else:
            doc = orjson.loads(raw)
            if doc["status"] == "cancelled":
                return
            doc["status"] = "cancelled"
        ctx.tx.call("HSET", key, cmd.saga_id, dumps(doc))

    return svc


async def read_shipments(redis: Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """saga id -> the shipment record."""
    return loads_values(await redis.hgetall(key_for(redis, prefix, NAME, "shipments")))
