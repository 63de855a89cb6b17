"""Every Redis key the orchestrator uses, in one place.

Per-saga keys are `<prefix>:<saga id>` (the hash a person reads with redis-cli HGETALL),
`<prefix>:<saga id>:history` (a capped list of transitions), `<prefix>:<saga id>:seen` (ids of
operator commands taken) and `<prefix>:<saga id>:gone` (the tombstone). Shared structures start
with `_`, which a saga id never does, so the two can never collide."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.model import Status


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

    @property
    def leader(self) -> str:
        return f"{self.prefix}:_leader"

    def owned(self, saga_id: str) -> dict[str, str]:
        """Every key of one saga, by kind (what `MEMORY USAGE` is summed over)."""
        return {
            "saga": self.saga(saga_id),
            "history": self.history(saga_id),
            "seen": self.seen(saga_id),
            "tombstone": self.tombstone(saga_id),
        }

    def shared_per_saga(self) -> dict[str, str]:
        """The shared structures that hold one entry per saga (or per command or timer)."""
        out = {f"index:{s.value}": self.index(s.value) for s in Status}
        return out | {"timers": self.timers, "outbox": self.outbox}
