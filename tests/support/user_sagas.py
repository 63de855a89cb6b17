"""A user's saga module and participant, written only against the public seams: loaded with
SAGA_SAGA_MODULES='["tests.support.user_sagas"]' and run with
`saga participant run tests.support.user_sagas:greeter`."""

from __future__ import annotations

from orchestrator.core.definition import SagaDefinition, StepDef
from participants.sdk import Context, Participant, SagaCommand

GREETING = SagaDefinition(
    "greeting",
    1,
    (
        StepDef("compose", "greeter", "ComposeGreeting", "DiscardGreeting", timeout_s=10),
        StepDef("deliver", "greeter", "DeliverGreeting", "RecallGreeting", timeout_s=10),
    ),
)
SAGAS = [GREETING]

greeter = Participant("greeter")


@greeter.action("ComposeGreeting")
async def compose(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
    return {"text": f"hello, {cmd.data.get('name', 'world')}"}


@greeter.action("DeliverGreeting")
async def deliver(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
    ctx.tx.rpush(ctx.key("delivered"), cmd.saga_id)
    return {"delivered": "yes"}


@greeter.compensation("DiscardGreeting")
async def discard(cmd: SagaCommand, ctx: Context) -> None:
    return None


@greeter.compensation("RecallGreeting")
async def recall(cmd: SagaCommand, ctx: Context) -> None:
    ctx.tx.call("LREM", ctx.key("delivered"), 0, cmd.saga_id)
