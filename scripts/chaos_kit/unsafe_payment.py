"""A payment participant that is NOT safe under re-delivery: the negative control of
`scripts/chaos --no-dedupe`. Never use it for anything else.

It charges with plain Redis writes on `ctx.redis`, outside the SDK's guard, each time a command
reaches it, and only then waits for "the card network". The SDK stores the outcome (and commits
the offset) after the handler returns, so a worker killed during that wait has charged without
a record of it: the command is delivered again and charged again. The sample payment worker
(`participants/samples/order/workers/payment.py`) does the same charge inside the guard's atomic
step, keyed by saga. The records use the sample's keys and format, so the same checker reads
both.

Run: saga participant run scripts.chaos_kit.unsafe_payment:build
"""

from __future__ import annotations

import asyncio

from participants.context import Context
from participants.keys import domain_key
from participants.participant import Participant
from participants.samples.order.workers.common import dumps, order_amount, participant, text
from participants.samples.order.workers.payment import NAME, REFUND
from schemas.messages import SagaCommand

#: how long the handler waits after charging: the window a kill lands in
NETWORK_DELAY_S = 0.5


def build() -> Participant:
    """The unsafe payment worker (same name, keys, faults and refund as the sample's)."""
    svc = participant(NAME)

    @svc.action("ProcessPayment")
    async def charge(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        prefix = ctx.settings.key_prefix
        amount, currency = str(order_amount(cmd.data)), text(cmd.data, "currency", "USD")
        charge_id = f"ch-{cmd.saga_id}"
        record = {"chargeId": charge_id, "amount": amount, "currency": currency,
                  "customerId": text(cmd.data, "customerId"), "status": "charged"}  # fmt: skip
        entry = {"type": "charge", "sagaId": cmd.saga_id, "chargeId": charge_id,
                 "amount": amount, "currency": currency}  # fmt: skip
        async with ctx.redis.pipeline(transaction=True) as p:  # deliberately outside the guard
            p.hset(domain_key(prefix, NAME, "charges"), cmd.saga_id, dumps(record))
            p.rpush(domain_key(prefix, NAME, "ledger"), dumps(entry))
            await p.execute()
        await asyncio.sleep(NETWORK_DELAY_S)
        return {"chargeId": charge_id, "amount": amount}

    @svc.compensation("RefundPayment")
    async def refund(cmd: SagaCommand, ctx: Context) -> None:
        keys = [domain_key(ctx.settings.key_prefix, NAME, k) for k in ("charges", "ledger")]
        await ctx.atomic(REFUND, keys, [cmd.saga_id, text(cmd.data, "currency", "USD")])

    return svc
