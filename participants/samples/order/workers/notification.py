"""Notification: order confirmations and cancellation notices, a stand-in for e-mail.

Redis (under `<prefix>:notification:`):
  outbox  list  JSON {"type": OrderConfirmation|CancellationNotice, "sagaId", "orderId",
                      "customerId", "notificationId"}, one per saga and type
Once per saga each: the SDK's done record per (saga, step) makes a repeat a no-op, and the
write goes through `ctx.tx`, atomic with that record.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from participants.context import Context
from participants.keys import key_for
from participants.participant import Participant
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers.common import dumps, participant, text
from schemas.messages import SagaCommand

NAME = "notification"


def _notify(cmd: SagaCommand, ctx: Context, kind: str) -> dict[str, str]:
    nid = f"ntf-{cmd.saga_id}-{kind}"
    entry = {
        "type": kind,
        "sagaId": cmd.saga_id,
        "orderId": text(cmd.data, "orderId", cmd.saga_id),
        "customerId": text(cmd.data, "customerId"),
        "notificationId": nid,
    }
    ctx.tx.rpush(ctx.key("outbox"), dumps(entry))
    return {"notificationId": nid}


def build(config: OrderConfig | None = None, http_offset: int = 0) -> Participant:
    """The notification worker, as `saga participant run notification` starts it."""
    svc = participant(NAME, config, http_offset)

    @svc.action("SendOrderConfirmation")
    async def confirm(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        return _notify(cmd, ctx, "OrderConfirmation")

    @svc.compensation("SendCancellationNotice")
    async def cancel(cmd: SagaCommand, ctx: Context) -> None:
        _notify(cmd, ctx, "CancellationNotice")

    return svc


async def read_outbox(redis: Redis, prefix: str) -> list[dict[str, Any]]:
    """Every notification sent, oldest first."""
    return [
        orjson.loads(e) for e in await redis.lrange(key_for(redis, prefix, NAME, "outbox"), 0, -1)
    ]
