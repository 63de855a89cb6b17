"""Every Redis key the participants use, in one place.

SDK bookkeeping lives under `<prefix>:participant:<name>:...`; a service's own domain state lives
under `<prefix>:<name>:...` (see `Context.key`). Saga ids contain no colons (schemas enforce it),
so the parts below cannot run into each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SdkKeys:
    prefix: str
    participant: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:participant:{self.participant}"

    def outcome(self, command_id: str) -> str:
        """The stored outcome of one command (JSON); a command seen again re-sends it."""
        return f"{self.base}:outcome:{command_id}"

    def done(self, saga_id: str, step: str, compensation: bool) -> str:
        """The successful outcome of a step's action (or compensation) for a saga, whatever the
        attempt: a later attempt gets the same answer without running the handler again."""
        return f"{self.base}:done:{saga_id}:{step}:{'compensation' if compensation else 'action'}"

    def tombstone(self, saga_id: str, step: str) -> str:
        """Set when a compensation for (saga, step) runs: the forward action is refused after it."""
        return f"{self.base}:tombstone:{saga_id}:{step}"


def group_id(prefix: str, participant: str) -> str:
    """One consumer group per service: replicas of a service compete for commands."""
    return f"{prefix}-participant-{participant}"


def domain_key(prefix: str, participant: str, *parts: str) -> str:
    return ":".join((prefix, participant, *parts))
