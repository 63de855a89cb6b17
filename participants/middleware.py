"""Middleware: code that wraps the processing of each new command, around its handler.

    class Timing(Middleware):
        async def handle(self, cmd, ctx, call_next):
            started = time.monotonic()
            try:
                return await call_next()
            finally:
                ctx.log.info("%s took %.3fs", cmd.command_type, time.monotonic() - started)

    svc = Participant("loyalty", middleware=[Timing()])   # or svc.use(Timing())

Only new commands pass through middleware: a duplicate, a repeat of a step that succeeded, or a
refusal after a compensation is answered from the stored records and never reaches it; nor does
a command without a handler. Inside `handle` a middleware may:

- run the command: `return await call_next()` (the handler runs and its outcome is stored; the
  outcome comes back, and returning it sends it as the reply), after a delay if it likes;
- fail it: raise `RetryableError` / `NonRetryableError` (any other exception counts as a
  retryable failure): the failure is stored and answered with `StepFailed`, exactly as if the
  handler had raised it, and the handler does not run;
- swallow it: return None without calling `call_next()`: nothing is stored and nothing is
  replied, as if the command had been lost (the orchestrator's timeout retries it);
- drop the reply: `await call_next()`, then return None: the outcome is stored, no reply is sent
  (a reply lost in flight; the command re-sent later gets the stored reply).

It returns `call_next()`'s outcome or None, nothing else: the reply is always the stored outcome,
so that a re-sent reply is the same message. `call_next()` runs once per command; middleware
added first is outermost, and sees None from `call_next()` when an inner one left no reply.

Infrastructure errors (Redis or Kafka away) are retried in place: inside `call_next()` for the
handler; one the middleware raises itself runs the middleware again, so what it does before
`call_next()` should be harmless to repeat. Writes a middleware queues on `ctx.tx` before
`call_next()` are applied with the handler's, atomically with the outcome.

`before_batch(batch)` runs once per batch before its new commands are handled (not at all when a
batch brings none), for what is read once per batch rather than once per command.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from participants.context import BatchScope, Context
from participants.outcome import Outcome
from schemas.messages import SagaCommand

#: Runs the rest of the chain and the handler; the outcome to reply with, or None for no reply.
CallNext = Callable[[], Awaitable[Outcome | None]]
MiddlewareFn = Callable[[SagaCommand, Context, CallNext], Awaitable[Outcome | None]]


class Middleware:
    """Override `handle`, `before_batch`, or both; the defaults do nothing."""

    async def before_batch(self, batch: BatchScope) -> None:
        """Once per batch with new commands, before any of them is handled."""

    async def handle(self, cmd: SagaCommand, ctx: Context, call_next: CallNext) -> Outcome | None:
        """Wrap one new command; see the module docstring for what it may do."""
        return await call_next()


class FunctionMiddleware(Middleware):
    """A bare `async def mw(cmd, ctx, call_next)` as a middleware (what `Participant.use` wraps)."""

    def __init__(self, fn: MiddlewareFn) -> None:
        self.fn = fn

    async def handle(self, cmd: SagaCommand, ctx: Context, call_next: CallNext) -> Outcome | None:
        return await self.fn(cmd, ctx, call_next)

    def __repr__(self) -> str:
        return f"FunctionMiddleware({getattr(self.fn, '__qualname__', self.fn)!r})"


async def run_chain(
    middleware: Sequence[Middleware], cmd: SagaCommand, ctx: Context, handler: CallNext
) -> Outcome | None:
    """Run `handler` inside every middleware, the first one outermost."""
    call = handler
    for mw in reversed(middleware):
        call = partial(mw.handle, cmd, ctx, call)
    return await call()
