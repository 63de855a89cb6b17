"""Inventory: reserves an order's items when it is placed, releases them when the order is
cancelled (payment failed, or refunded after a failed shipment).

Redis (under `<prefix>:choreo-inventory:`):
  stock         hash  product -> units (`saga choreo set-stock`)
  reservations  hash  saga id -> {"reservationId", "items", "status": reserved|released|void}
"""

from __future__ import annotations

import orjson

from participants.context import Context
from participants.keys import domain_key
from participants.participant import Participant
from participants.samples.choreo.config import ChoreoConfig
from participants.samples.choreo.workers.common import order_items
from participants.scripts import GuardedScript
from schemas.messages import SagaCommand

NAME = "choreo-inventory"
RESERVE = GuardedScript.from_package("reserve.lua", "participants.samples.choreo")
RELEASE = GuardedScript.from_package("release.lua", "participants.samples.choreo")


def keys(prefix: str, cluster: bool = False) -> list[str]:
    """Stock and reservations (`cluster`: the Redis Cluster layout, `participants.keys`)."""
    return [domain_key(prefix, NAME, k, cluster=cluster) for k in ("stock", "reservations")]


def _keys(ctx: Context) -> list[str]:
    return [ctx.key("stock"), ctx.key("reservations")]


def build(config: ChoreoConfig | None = None) -> Participant:
    config = config or ChoreoConfig()
    svc = Participant(NAME, events_topic=config.choreo_topic)

    @svc.on("OrderPlaced", step="reserve", emits="InventoryReserved", fails="InventoryFailed")
    async def reserve(event: SagaCommand, ctx: Context) -> dict[str, str]:
        items = orjson.dumps(order_items(event.data)).decode()
        return await ctx.atomic(RESERVE, _keys(ctx), [event.saga_id, items])

    async def release(event: SagaCommand, ctx: Context) -> dict[str, str]:
        return await ctx.atomic(RELEASE, _keys(ctx), [event.saga_id])

    # Two ways an order is cancelled, one compensation: both are the step `reserve` undone, so
    # whichever comes second finds it done and publishes the same InventoryReleased again.
    for cause in ("PaymentFailed", "PaymentRefunded"):
        svc.on(cause, step="reserve", compensation=True, emits="InventoryReleased")(release)
    return svc
