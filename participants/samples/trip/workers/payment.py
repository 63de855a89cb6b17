"""Trip payment: one charge per trip, refunded at most once (`TakePayment` / `RefundPayment`).

Its own participant, `trip_payment`: the order sample's payment worker reads order fields.

Redis (under `<prefix>:trip_payment:`):
  charges  hash  saga id -> {"chargeId", "amount", "currency", "customerId",
                             "status": charged|refunded}
  ledger   list  JSON entries {"type": charge|refund, "sagaId", "chargeId", "amount", "currency"}
Written through `ctx.tx`, in the SDK's atomic step with the outcome. The trip's optional
`paymentMethod` "card-declined" is declined (non-retryable), to force a failure after the
bookings; `currency` defaults to USD.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from participants.context import Context
from participants.errors import NonRetryableError
from participants.keys import key_for
from participants.participant import Participant
from participants.samples.trip.workers.common import (
    currency,
    dumps,
    loads_values,
    participant,
    trip_of,
)
from schemas.messages import SagaCommand

NAME = "trip_payment"
DECLINED_METHOD = "card-declined"


def charge_id(saga_id: str) -> str:
    return f"tch-{saga_id}"


def build() -> Participant:
    """The trip payment worker, as `saga participant run trip_payment` starts it."""
    svc = participant(NAME)

    @svc.action("TakePayment")
    async def take(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        trip = trip_of(cmd.data)
        try:
            money = currency(cmd.data)
        except ValueError as exc:
            raise NonRetryableError(str(exc)) from None
        if cmd.data.get("paymentMethod") == DECLINED_METHOD:
            raise NonRetryableError(f"declined: payment method {DECLINED_METHOD!r} was refused")
        key = ctx.key("charges")
        raw = await ctx.redis.hget(key, cmd.saga_id)
        if raw is not None:
            # Only once the SDK's records of this step have expired: never charge twice.
            existing = orjson.loads(raw)
            if existing["status"] != "charged":
                raise NonRetryableError("the payment for this trip was already refunded")
            return {"chargeId": existing["chargeId"], "amount": existing["amount"]}
        amount, cid = str(trip.amount), charge_id(cmd.saga_id)
        doc = {
            "chargeId": cid,
            "amount": amount,
            "currency": money,
            "customerId": trip.customer_id,
            "status": "charged",
        }
        ctx.tx.call("HSET", key, cmd.saga_id, dumps(doc))
        ctx.tx.rpush(ctx.key("ledger"), dumps(_entry("charge", cmd.saga_id, doc)))
        return {"chargeId": cid, "amount": amount}

    @svc.compensation("RefundPayment")
    async def refund(cmd: SagaCommand, ctx: Context) -> None:
        key = ctx.key("charges")
        raw = await ctx.redis.hget(key, cmd.saga_id)
        if raw is None:
            # Never charged: nothing to refund. The SDK's tombstone refuses a late charge.
            return
        doc = orjson.loads(raw)
        if doc["status"] != "charged":
            return
        ctx.tx.call("HSET", key, cmd.saga_id, dumps({**doc, "status": "refunded"}))
        ctx.tx.rpush(ctx.key("ledger"), dumps(_entry("refund", cmd.saga_id, doc)))

    return svc


def _entry(kind: str, saga_id: str, charge: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "sagaId": saga_id,
        "chargeId": charge["chargeId"],
        "amount": charge["amount"],
        "currency": charge["currency"],
    }


async def read_charges(redis: Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """saga id -> the charge record."""
    return loads_values(await redis.hgetall(key_for(redis, prefix, NAME, "charges")))


async def read_ledger(redis: Redis, prefix: str) -> list[dict[str, Any]]:
    """Every charge and refund in the order they happened."""
    return [
        orjson.loads(e) for e in await redis.lrange(key_for(redis, prefix, NAME, "ledger"), 0, -1)
    ]
