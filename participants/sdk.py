"""The participant SDK: everything a service needs to take part in sagas.

    from participants.sdk import Context, NonRetryableError, Participant, SagaCommand, run

    svc = Participant("loyalty")

    @svc.action("AwardPoints")
    async def award(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        ctx.tx.hincrby(ctx.key("points"), cmd.data["customerId"], 10)
        return {"points": "10"}

    @svc.compensation("RevokePoints")
    async def revoke(cmd: SagaCommand, ctx: Context) -> None:
        ctx.tx.hincrby(ctx.key("points"), cmd.data["customerId"], -10)

    asyncio.run(run(Settings(), svc))

Guarantees (details in docs/PARTICIPANTS.md):
- a command seen again (same command id) gets the stored reply; its handler does not run again;
- a later attempt of a step that already succeeded gets the same result without running again;
- once a step's compensation ran for a saga, its forward action is refused (non-retryable);
- writes queued on `ctx.tx`, or made by a Lua body through `ctx.atomic`, are applied in the same
  atomic Redis step that stores the outcome, so a crash can never apply them twice;
- handler exceptions become StepFailed replies: `NonRetryableError` -> retryable=false,
  `RetryableError` and any other exception -> retryable=true; Redis/Kafka outages are retried in
  place and never replied or dead-lettered.

Middleware (`Participant(name, middleware=[...])` or `svc.use(mw)`) wraps the processing of each
new command: it may delay, fail, swallow it, or drop its reply (see `participants.middleware`).
"""

from participants.config import ParticipantConfig, WorkerOptions
from participants.context import BatchScope, Context, Effects
from participants.errors import (
    InfrastructureError,
    NonRetryableError,
    ParticipantError,
    RetryableError,
    StepError,
)
from participants.middleware import CallNext, Middleware, MiddlewareFn
from participants.outcome import Outcome
from participants.participant import Handler, Participant
from participants.runtime import WorkerStats
from participants.scripts import GuardedScript
from participants.worker import install_signal_handlers, run, run_many
from schemas.messages import SagaCommand

__all__ = [
    "BatchScope",
    "CallNext",
    "Context",
    "Effects",
    "GuardedScript",
    "Handler",
    "InfrastructureError",
    "Middleware",
    "MiddlewareFn",
    "NonRetryableError",
    "Outcome",
    "Participant",
    "ParticipantConfig",
    "ParticipantError",
    "RetryableError",
    "SagaCommand",
    "StepError",
    "WorkerOptions",
    "WorkerStats",
    "install_signal_handlers",
    "run",
    "run_many",
]
