"""A participant service: a name and one handler per command type."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from participants.context import Context
from schemas.messages import SagaCommand

Handler = Callable[[SagaCommand, Context], Awaitable[dict[str, str] | None]]
H = TypeVar("H", bound=Handler)

# The name becomes part of Redis keys and of the consumer group id.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


@dataclass(frozen=True)
class Registration:
    command_type: str
    compensation: bool
    handler: Handler


class Participant:
    """Register handlers, then run it with `participants.sdk.run(settings, participant)`.

    svc = Participant("inventory")

    @svc.action("ReserveItems")
    async def reserve(cmd: SagaCommand, ctx: Context) -> dict[str, str]: ...

    @svc.compensation("ReleaseReservation")
    async def release(cmd: SagaCommand, ctx: Context) -> None: ...
    """

    def __init__(self, name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"participant name {name!r} must match {_NAME.pattern}")
        self.name = name
        self.handlers: dict[str, Registration] = {}

    def action(self, command_type: str) -> Callable[[H], H]:
        """Register the forward action for `command_type`."""
        return self._register(command_type, compensation=False)

    def compensation(self, command_type: str) -> Callable[[H], H]:
        """Register a compensation: it must be safe to repeat, and to receive for an action that
        never happened (the SDK then refuses that action if it arrives later)."""
        return self._register(command_type, compensation=True)

    def _register(self, command_type: str, compensation: bool) -> Callable[[H], H]:
        if command_type in self.handlers:
            raise ValueError(f"{self.name} already has a handler for {command_type}")

        def decorator(fn: H) -> H:
            self.handlers[command_type] = Registration(command_type, compensation, fn)
            return fn

        return decorator

    def __repr__(self) -> str:
        return f"Participant({self.name!r}, {sorted(self.handlers)})"
