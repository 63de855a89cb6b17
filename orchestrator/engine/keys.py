"""Every Redis key the orchestrator uses, in one place.

Two layouts, chosen by `SAGA_REDIS_CLUSTER` (docs/ARCHITECTURE.md, "Key map"):

- One Redis (`shards == 0`): per-saga keys are `<prefix>:<saga id>` (the hash a person reads
  with `redis-cli HGETALL saga:<id>`), `<prefix>:<saga id>:history` (a capped list of
  transitions), `<prefix>:<saga id>:seen` (ids of operator commands taken) and
  `<prefix>:<saga id>:gone` (the tombstone); the shared structures are one key each
  (`<prefix>:_outbox`, `<prefix>:_timers`, `<prefix>:_index:<state>`).
- Redis Cluster (`shards == N`, the topics' partition count): a saga belongs to shard p, the
  Kafka partition its id hashes to (murmur2, as Kafka's default partitioner places the saga's
  records), and every key one step touches carries the hash tag `{p<p>}`:
  `<prefix>:{p7}:<saga id>`, `<prefix>:{p7}:<saga id>:history`, `<prefix>:{p7}:_outbox`,
  `<prefix>:{p7}:_timers`, `<prefix>:{p7}:_index:<state>`. One step stays one atomic script
  in one slot; the shards spread over the masters.

Shared structures start with `_`, which a saga id never does, so the two can never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiokafka.partitioner import murmur2

from orchestrator.core.model import Status


class _KeySettings(Protocol):
    key_prefix: str
    redis_cluster: bool
    topic_partitions: int


def partition_of(saga_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka's and the Java
    client's) gives a record keyed by the saga id."""
    return int(murmur2(saga_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Keys:
    prefix: str = "saga"
    #: 0: one Redis, one key per shared structure; N: Redis Cluster, N shards (see above)
    shards: int = 0

    @classmethod
    def of(cls, s: _KeySettings) -> Keys:
        return cls(s.key_prefix, s.topic_partitions if s.redis_cluster else 0)

    # ---- shards ----
    def shard_of(self, saga_id: str) -> int | None:
        return partition_of(saga_id, self.shards) if self.shards else None

    def all_shards(self) -> list[int | None]:
        """Every shard a query must read: `[None]` on one Redis."""
        return list(range(self.shards)) if self.shards else [None]

    def _base(self, shard: int | None) -> str:
        if not self.shards:
            return self.prefix
        if shard is None or not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard!r} is not one of the {self.shards} shards")
        return f"{self.prefix}:{{p{shard}}}"

    # ---- one saga ----
    def saga(self, saga_id: str) -> str:
        return f"{self._base(self.shard_of(saga_id))}:{saga_id}"

    def history(self, saga_id: str) -> str:
        return f"{self.saga(saga_id)}:history"

    def seen(self, saga_id: str) -> str:
        return f"{self.saga(saga_id)}:seen"

    def tombstone(self, saga_id: str) -> str:
        """Left when a finished saga's keys expire: its id stays taken (a few bytes)."""
        return f"{self.saga(saga_id)}:gone"

    # ---- shared, per shard ----
    def index(self, state: str, shard: int | None = None) -> str:
        """Sagas in a state, scored by the time (ms) they entered it."""
        return f"{self._base(shard)}:_index:{state}"

    def outbox_of(self, shard: int | None) -> str:
        return f"{self._base(shard)}:_outbox"

    def timers_of(self, shard: int | None) -> str:
        return f"{self._base(shard)}:_timers"

    @property
    def outbox(self) -> str:
        """The outbox on one Redis (`outbox_of(shard)` in cluster mode)."""
        return self.outbox_of(None)

    @property
    def timers(self) -> str:
        """The timer set on one Redis (`timers_of(shard)` in cluster mode)."""
        return self.timers_of(None)

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

    def shared_per_saga(self, shard: int | None = None) -> dict[str, str]:
        """The shared structures that hold one entry per saga (or per command or timer), of
        one shard."""
        out = {f"index:{s.value}": self.index(s.value, shard) for s in Status}
        return out | {"timers": self.timers_of(shard), "outbox": self.outbox_of(shard)}
