"""Every Redis key the orchestrator uses, in one place.

Per-saga keys are `<prefix>:<saga id>` (the hash a person reads with redis-cli HGETALL),
`<prefix>:<saga id>:history` (a stream of transitions) and `<prefix>:<saga id>:seen` (ids of
inputs already applied). Shared structures start with `_`, which a saga id never does, so the
two can never collide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "saga"

    def saga(self, saga_id: str) -> str:
        return f"{self.prefix}:{saga_id}"

    def history(self, saga_id: str) -> str:
        return f"{self.prefix}:{saga_id}:history"

    def seen(self, saga_id: str) -> str:
        return f"{self.prefix}:{saga_id}:seen"

    def tombstone(self, saga_id: str) -> str:
        """Left when a finished saga's keys expire: its id stays taken (a few bytes)."""
        return f"{self.prefix}:{saga_id}:gone"

    def index(self, state: str) -> str:
        """Sagas in a state, scored by the time (ms) they entered it."""
        return f"{self.prefix}:_index:{state}"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}:_outbox"

    @property
    def timers(self) -> str:
        return f"{self.prefix}:_timers"

    def offsets(self, group: str) -> str:
        return f"{self.prefix}:_offsets:{group}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}:_leader"
