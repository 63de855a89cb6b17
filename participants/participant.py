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

    def __init__(self, name: str, middleware: Iterable[Middleware | MiddlewareFn] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"participant name {name!r} must match {_NAME.pattern}")
        self.name = name
        self.handlers: dict[str, Registration] = {}
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
