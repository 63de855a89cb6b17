"""A participant service: a name, one handler per command type, and the middleware around them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from participants.context import Context
from participants.middleware import FunctionMiddleware, Middleware, MiddlewareFn
from schemas.messages import SagaCommand

Handler = Callable[[SagaCommand, Context], Awaitable[dict[str, str] | None]]
H = TypeVar("H", bound=Handler)
M = TypeVar("M", bound=Middleware | MiddlewareFn)

# The name becomes part of Redis keys and of the consumer group id.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


@dataclass(frozen=True)
class Registration:
    command_type: str
    compensation: bool
    handler: Handler


@dataclass(frozen=True)
class Reaction:
    """A handler run for a domain event of a choreography (`Participant.on`) instead of a
    command: the step it performs (or compensates) and the events its outcome publishes."""

    event_type: str
    step: str
    compensation: bool
    #: published when the handler succeeds ("" = nothing)
    emits: str
    #: published when it fails for good: non-retryable, or out of attempts ("" = nothing)
    fails: str
    #: attempts in place for a retryable failure (no orchestrator retries an event)
    max_attempts: int


class Participant:
    """Register handlers, then run it with `participants.sdk.run(settings, participant)`.

    svc = Participant("loyalty")

    @svc.action("AwardPoints")
    async def award(cmd: SagaCommand, ctx: Context) -> dict[str, str]: ...

    @svc.compensation("RevokePoints")
    async def revoke(cmd: SagaCommand, ctx: Context) -> None: ...

    `middleware` (or `svc.use(mw)` later) wraps the processing of each new command: see
    `participants.middleware`.
    """

    def __init__(
        self,
        name: str,
        middleware: Iterable[Middleware | MiddlewareFn] = (),
        events_topic: str = "",
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"participant name {name!r} must match {_NAME.pattern}")
        self.name = name
        #: the topic of the domain events this service reacts to and publishes (`on`)
        self.events_topic = events_topic
        self.handlers: dict[str, Registration] = {}
        self.reactions: dict[str, Reaction] = {}
        self.middleware: list[Middleware] = []
        for mw in middleware:
            self.use(mw)

    def action(self, command_type: str) -> Callable[[H], H]:
        """Register the forward action for `command_type`."""
        return self._register(command_type, compensation=False)

    def compensation(self, command_type: str) -> Callable[[H], H]:
        """Register a compensation: it must be safe to repeat, and to receive for an action that
        never happened (the SDK then refuses that action if it arrives later)."""
        return self._register(command_type, compensation=True)

    def on(
        self,
        event_type: str,
        *,
        step: str,
        emits: str = "",
        fails: str = "",
        compensation: bool = False,
        max_attempts: int = 3,
    ) -> Callable[[H], H]:
        """React to the domain event `event_type` on `events_topic` (a choreography, no
        orchestrator). The handler gets the event as a `SagaCommand` (`command_type` is the event
        type, `data` its data, `causation_id` its id) and runs under the same guard as a
        command's: once per (saga, step, direction), effects in `ctx.tx`/`ctx.atomic` applied
        with the stored outcome, a forward step refused once its compensation ran. Its outcome
        publishes `emits` (success: the event's data plus the result) or `fails` (the data plus
        `reason`), with an id derived from (saga, step, direction, type), so a redelivery
        publishes the same event again, never a new one."""
        if not self.events_topic:
            raise ValueError(f"{self.name}: set Participant(events_topic=...) before on()")
        if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 10:
            raise ValueError(f"{self.name}: max_attempts must be 1..10, not {max_attempts!r}")
        named = {"event type": event_type, "step": step, "emits": emits, "fails": fails}
        for what, name in named.items():
            optional = what in ("emits", "fails") and name == ""
            if not optional and not (isinstance(name, str) and _NAME.match(name)):
                raise ValueError(f"{self.name}: {what} {name!r} must match {_NAME.pattern}")
        register = self._register(event_type, compensation)

        def decorator(fn: H) -> H:
            register(fn)
            self.reactions[event_type] = Reaction(
                event_type, step, compensation, emits, fails, max_attempts
            )
            return fn

        return decorator

    @property
    def takes_commands(self) -> bool:
        """Whether any handler answers orchestrator commands (not only domain events)."""
        return any(t not in self.reactions for t in self.handlers) or not self.reactions

    def use(self, middleware: M) -> M:
        """Add a middleware (a `Middleware`, or an `async def mw(cmd, ctx, call_next)`); the
        first added is the outermost. Returns it unchanged, so it also works as a decorator."""
        if isinstance(middleware, Middleware):
            self.middleware.append(middleware)
        else:
            self.middleware.append(FunctionMiddleware(middleware))
        return middleware

    def handler_for(self, cmd: SagaCommand) -> Registration | None:
        """The handler registered for the command's type and direction (action/compensation)."""
        reg = self.handlers.get(cmd.command_type)
        return reg if reg is not None and reg.compensation == cmd.compensation else None

    def _register(self, command_type: str, compensation: bool) -> Callable[[H], H]:
        if command_type in self.handlers:
            raise ValueError(f"{self.name} already has a handler for {command_type}")

        def decorator(fn: H) -> H:
            self.handlers[command_type] = Registration(command_type, compensation, fn)
            return fn

        return decorator

    def __repr__(self) -> str:
        return f"Participant({self.name!r}, {sorted(self.handlers)})"
