"""Shipping: ships an order once it is paid. An order without a shipping address cannot ship
(published as ShippingFailed, which makes payment refund and inventory release).

Redis (under `<prefix>:choreo-shipping:`):
  shipments  hash  saga id -> {"trackingNumber", "address"}
"""

from __future__ import annotations

import orjson

from participants.context import Context
from participants.errors import NonRetryableError
from participants.participant import Participant
from participants.samples.choreo.config import ChoreoConfig
from schemas.messages import SagaCommand

NAME = "choreo-shipping"


def build(config: ChoreoConfig | None = None) -> Participant:
    config = config or ChoreoConfig()
    svc = Participant(NAME, events_topic=config.choreo_topic)

    @svc.on("PaymentCompleted", step="ship", emits="OrderShipped", fails="ShippingFailed")
    async def ship(event: SagaCommand, ctx: Context) -> dict[str, str]:
        address = event.data.get("shippingAddress")
        if not isinstance(address, str) or not address.strip():
            raise NonRetryableError("no shipping address")
        tracking = f"trk-{event.saga_id}"
        record = {"trackingNumber": tracking, "address": address[:256]}
        ctx.tx.hset(ctx.key("shipments"), {event.saga_id: orjson.dumps(record).decode()})
        return {"trackingNumber": tracking}

    return svc
