"""Every Redis key the orchestrator uses, in one place.

Two layouts, chosen by `SAGA_REDIS_CLUSTER` (docs/ARCHITECTURE.md, "Key map"):

- One Redis (`shards == 0`): per-saga keys are `<prefix>:<saga id>` (the hash a person reads
  with `redis-cli HGETALL saga:<id>`), `<prefix>:<saga id>:history` (a capped list of
  transitions), `<prefix>:<saga id>:seen` (ids of operator commands taken) and
  `<prefix>:<saga id>:gone` (the tombstone); the state indexes are one key each
  (`<prefix>:_index:<state>`).
- Redis Cluster (`shards == N`, the topics' partition count): a saga belongs to shard p, the
  Kafka partition its id hashes to (murmur2, as Kafka's default partitioner places the saga's
  records), and every key one step touches carries the hash tag `{p<p>}`:
  `<prefix>:{p7}:<saga id>`, `<prefix>:{p7}:<saga id>:history`, `<prefix>:{p7}:_outbox`,
  `<prefix>:{p7}:_timers`, `<prefix>:{p7}:_index:<state>`. One step stays one atomic script
  in one slot; the shards spread over the masters.

In both layouts what the relay serves is per partition (`partitions`, the topics' partition
count): `<prefix>:{p7}:_outbox`, `<prefix>:{p7}:_timers`, and the partition's ownership,
`<prefix>:{p7}:_owner` (the token of the copy whose relay serves it) and `<prefix>:{p7}:_epoch`
(bumped by every take). So each copy's relay reads only the partitions it owns, and the
ownership check and the read are one script in one slot. On one Redis the tag is harmless.
The global `<prefix>:_outbox` and `<prefix>:_timers` of older versions (`old_outbox`,
`old_timers`) are still drained by the owner of partition 0.

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
    #: 0: one Redis, saga keys untagged and global indexes; N: Redis Cluster, N shards
    shards: int = 0
    #: the topics' partition count: the relay's outbox, timers and ownership are per partition
    #: in both layouts (0: as many as `shards`, at least 1)
    partitions: int = 0

    def __post_init__(self) -> None:
        if self.partitions == 0:  # frozen: set once, here
            object.__setattr__(self, "partitions", self.shards or 1)
        if self.partitions < 1 or (self.shards and self.shards != self.partitions):
            raise ValueError(
                f"{self.partitions} partitions for {self.shards} shards: on a Redis Cluster the "
                "shards are the partitions"
            )

    @classmethod
    def of(cls, s: _KeySettings) -> Keys:
        n = s.topic_partitions
        return cls(s.key_prefix, n if s.redis_cluster else 0, n)

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

    # ---- what the relay serves, per partition (both layouts) ----
    def partition(self, saga_id: str) -> int:
        """The partition whose relay serves this saga's outbox entries and timers."""
        return partition_of(saga_id, self.partitions)

    def all_partitions(self) -> list[int]:
        return list(range(self.partitions))

    def _part(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition!r} is not one of the {self.partitions}")
        return f"{self.prefix}:{{p{partition}}}"

    def outbox_of(self, partition: int) -> str:
        return f"{self._part(partition)}:_outbox"

    def timers_of(self, partition: int) -> str:
        """Due times (ms) of the partition's timers, by member (`timer_member`)."""
        return f"{self._part(partition)}:_timers"

    def owner(self, partition: int) -> str:
        """`<member>:<epoch>` of the copy whose relay serves the partition now."""
        return f"{self._part(partition)}:_owner"

    def epoch(self, partition: int) -> str:
        """The partition's ownership generation, bumped by every take."""
        return f"{self._part(partition)}:_epoch"

    @property
    def old_outbox(self) -> str:
        """The global outbox of older versions (one Redis): drained, never written."""
        return f"{self.prefix}:_outbox"

    @property
    def old_timers(self) -> str:
        """The global timer set of older versions (one Redis): drained, never written."""
        return f"{self.prefix}:_timers"

    def owned(self, saga_id: str) -> dict[str, str]:
        """Every key of one saga, by kind (what `MEMORY USAGE` is summed over)."""
        return {
            "saga": self.saga(saga_id),
            "history": self.history(saga_id),
            "seen": self.seen(saga_id),
            "tombstone": self.tombstone(saga_id),
        }

    def shared_per_saga(self, saga_id: str) -> dict[str, str]:
        """The shared structures that may hold an entry of this saga (or of its commands or
        timers): its shard's indexes, its partition's timers and outbox."""
        shard, part = self.shard_of(saga_id), self.partition(saga_id)
        out = {f"index:{s.value}": self.index(s.value, shard) for s in Status}
        return out | {"timers": self.timers_of(part), "outbox": self.outbox_of(part)}
