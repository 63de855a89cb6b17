"""Loyalty points for orders. Run: saga participant run participants.examples.loyalty:svc"""

from decimal import Decimal

from participants.sdk import Context, NonRetryableError, Participant, SagaCommand

svc = Participant("loyalty")


@svc.action("AwardPoints")
async def award(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
    if not cmd.data.get("customerId"):
        raise NonRetryableError("the order names no customer")  # -> StepFailed, retryable=false
    points = int(Decimal(str(cmd.data.get("amount", 0))))  # one point per whole unit spent
    ctx.tx.hincrby(ctx.key("points"), cmd.data["customerId"], points)  # applied exactly once
    ctx.tx.hset(ctx.key("awards"), {cmd.saga_id: points})
    return {"points": str(points)}


@svc.compensation("RevokePoints")
async def revoke(cmd: SagaCommand, ctx: Context) -> None:
    points = int(await ctx.redis.hget(ctx.key("awards"), cmd.saga_id) or 0)  # 0: never awarded
    ctx.tx.hincrby(ctx.key("points"), cmd.data["customerId"], -points)
    ctx.tx.hset(ctx.key("awards"), {cmd.saga_id: 0})
