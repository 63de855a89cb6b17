"""Payment: one charge per saga, refunded at most once, with a ledger a person can read.

Redis (under `<prefix>:payment:`):
  charges  hash  saga id -> {"chargeId", "amount", "currency", "customerId",
                             "status": charged|refunded|void}   (void: refunded before charged)
  ledger   list  JSON entries {"type": charge|refund, "sagaId", "chargeId", "amount", "currency"}
Declines (non-retryable): amount above the limit, or the configured test payment method.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from participants.context import Context
from participants.errors import NonRetryableError
from participants.keys import key_for
from participants.participant import Participant
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers.common import (
    loads_values,
    order_amount,
    participant,
    script,
    text,
)
from schemas.messages import SagaCommand

NAME = "payment"
CHARGE = script("payment_charge.lua")
REFUND = script("payment_refund.lua")


def _keys(ctx: Context) -> list[str]:
    return [ctx.key("charges"), ctx.key("ledger")]


def build(config: OrderConfig | None = None, http_offset: int = 0) -> Participant:
    """The payment worker. `config` defaults to `OrderConfig()`, read from the environment: this
    is what `saga participant run payment` calls (entry point `saga.participants`)."""
    config = config or OrderConfig()
    limit, declined_method = config.payment_limit, config.payment_declined_method
    svc = participant(NAME, config, http_offset)

    @svc.action("ProcessPayment")
    async def charge(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        amount = order_amount(cmd.data)
        if amount > limit:
            raise NonRetryableError(f"declined: amount {amount} exceeds the limit of {limit}")
        if declined_method and text(cmd.data, "paymentMethod") == declined_method:
            raise NonRetryableError(f"declined: payment method {declined_method!r} was refused")
        currency = text(cmd.data, "currency", "USD")
        customer = text(cmd.data, "customerId")
        args = [cmd.saga_id, f"ch-{cmd.saga_id}", str(amount), currency, customer]
        return await ctx.atomic(CHARGE, _keys(ctx), args)

    @svc.compensation("RefundPayment")
    async def refund(cmd: SagaCommand, ctx: Context) -> None:
        currency = text(cmd.data, "currency", "USD")
        await ctx.atomic(REFUND, _keys(ctx), [cmd.saga_id, currency])

    return svc


async def read_charges(redis: Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """saga id -> the charge record."""
    return loads_values(await redis.hgetall(key_for(redis, prefix, NAME, "charges")))


async def read_ledger(redis: Redis, prefix: str) -> list[dict[str, Any]]:
    """Every charge and refund in the order they happened."""
    return [
        orjson.loads(e) for e in await redis.lrange(key_for(redis, prefix, NAME, "ledger"), 0, -1)
    ]


def net_by_saga(ledger: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Charged minus refunded per saga: 0 for a compensated saga, the amount for a completed one."""
    net: dict[str, Decimal] = {}
    for entry in ledger:
        sign = 1 if entry["type"] == "charge" else -1
        net[entry["sagaId"]] = net.get(entry["sagaId"], Decimal(0)) + sign * Decimal(
            entry["amount"]
        )
    return net
