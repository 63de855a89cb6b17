"""Payment: charges an order once its items are reserved, refunds it when shipping fails.

Redis (under `<prefix>:choreo-payment:`):
  charges  hash  saga id -> {"chargeId", "amount", "status": charged|refunded|void}
  ledger   list  JSON entries {"type": charge|refund, "sagaId", "amount"}
Declines (non-retryable, published as PaymentFailed): an amount above
`SAGA_CHOREO_PAYMENT_LIMIT`, or the payment method `SAGA_CHOREO_DECLINED_METHOD`.
"""

from __future__ import annotations

import orjson

from participants.context import Context
from participants.errors import NonRetryableError
from participants.keys import domain_key
from participants.participant import Participant
from participants.samples.choreo.config import ChoreoConfig
from participants.samples.choreo.workers.common import order_amount
from schemas.messages import SagaCommand

NAME = "choreo-payment"


def build(config: ChoreoConfig | None = None) -> Participant:
    config = config or ChoreoConfig()
    limit, declined = config.choreo_payment_limit, config.choreo_declined_method
    svc = Participant(NAME, events_topic=config.choreo_topic)

    @svc.on("InventoryReserved", step="charge", emits="PaymentCompleted", fails="PaymentFailed")
    async def charge(event: SagaCommand, ctx: Context) -> dict[str, str]:
        amount = order_amount(event.data)
        if amount > limit:
            raise NonRetryableError(f"declined: amount {amount} exceeds the limit of {limit}")
        if declined and event.data.get("paymentMethod") == declined:
            raise NonRetryableError(f"declined: payment method {declined!r} was refused")
        charge_id = f"ch-{event.saga_id}"
        record = {"chargeId": charge_id, "amount": str(amount), "status": "charged"}
        entry = {"type": "charge", "sagaId": event.saga_id, "amount": str(amount)}
        ctx.tx.hset(ctx.key("charges"), {event.saga_id: orjson.dumps(record).decode()})
        ctx.tx.rpush(ctx.key("ledger"), orjson.dumps(entry).decode())
        return {"chargeId": charge_id}

    @svc.on("ShippingFailed", step="charge", compensation=True, emits="PaymentRefunded")
    async def refund(event: SagaCommand, ctx: Context) -> dict[str, str]:
        raw = await ctx.redis.hget(ctx.key("charges"), event.saga_id)
        record = orjson.loads(raw) if raw else {"status": "void"}
        if record.get("status") != "charged":  # never charged, or refunded already
            return {"refunded": "0"}
        record["status"] = "refunded"
        entry = {"type": "refund", "sagaId": event.saga_id, "amount": record["amount"]}
        ctx.tx.hset(ctx.key("charges"), {event.saga_id: orjson.dumps(record).decode()})
        ctx.tx.rpush(ctx.key("ledger"), orjson.dumps(entry).decode())
        return {"refunded": record["amount"]}

    return svc


def charges_key(prefix: str, cluster: bool = False) -> str:
    return domain_key(prefix, NAME, "charges", cluster=cluster)


def ledger_key(prefix: str, cluster: bool = False) -> str:
    return domain_key(prefix, NAME, "ledger", cluster=cluster)
