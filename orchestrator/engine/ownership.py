"""Which partitions this copy's relay serves, and the fence that keeps a paused copy from
firing for partitions it lost.

The relay's work follows the events topic's partitions (timers become TimerFired records keyed
by saga id, so a saga's timers and outbox entries sit in the partition its records go to). When
Kafka assigns a partition, the relay takes it in Redis: one script bumps the partition's epoch
and writes `<prefix>:{pN}:_owner = <member>:<epoch>` (`lua/take.lua`). Every read the relay
fires from starts with a check, in the same script, that `_owner` still holds that token
(`lua/fenced.lua`); a copy that was paused (SIGSTOP, a long GC, a frozen VM) while its
partitions moved to another copy, which took them with a higher epoch, reads nothing, so it
fires nothing: the read answers "fenced", the relay counts it (`saga_relay_fenced_total`) and
drops the partition. A revoke drops a partition at once, without waiting for Redis. (The
consumer, librdkafka, also revokes by itself on waking from a pause longer than its session:
whichever of the two comes first stops the relay.)

What the fence cannot stop: a send already on its way when the pause hit (read before the
partition moved). Its records carry deterministic ids (`timer|...`, command ids), so the
copies are deduplicated downstream. There is no lease and no global leader: a copy's relay
serves what Kafka assigned it, and a slow copy costs only its own partitions' lag.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from infra.crashpoints import crash_point
from infra.rdkafka import TopicPartition
from orchestrator.engine.keys import Keys
from orchestrator.telemetry.metrics import Metrics

log = logging.getLogger("orchestrator.engine.ownership")

Rows = list[tuple[bytes, dict[bytes, bytes]]]


def _lua(name: str) -> str:
    return resources.files("orchestrator.engine").joinpath("lua", name).read_text()


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Ownership:
    """The partitions this copy was assigned (`pending` until taken) and the tokens it took."""

    def __init__(self, redis: Redis, keys: Keys, metrics: Metrics) -> None:
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        #: names this process in `_owner`; a restarted copy is another member
        self.member = uuid.uuid4().hex
        self.pending: set[int] = set()
        self.tokens: dict[int, str] = {}
        self._take = redis.register_script(_lua("take.lua"))
        self._read = redis.register_script(_lua("fenced.lua"))

    # ---- from the rebalance listener: no I/O, so a revoke acts at once ----
    def assign(self, partitions: Iterable[int]) -> None:
        self.pending |= set(partitions)

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.pending.discard(p)
            self._drop(p)

    def _drop(self, p: int) -> None:
        self.tokens.pop(p, None)
        self.metrics.relay_lag_s.pop(p, None)
        self.metrics.relay_partitions = len(self.tokens)

    # ---- from the relay ----
    async def take_pending(self) -> None:
        """Take every partition assigned since the last round (a failure leaves the rest
        pending for the next round)."""
        for p in sorted(self.pending):
            keys = [self.keys.epoch(p), self.keys.owner(p)]
            token = _text(await self._take(keys=keys, args=[self.member]))
            if p in self.pending:  # not revoked while the take was on its way
                self.pending.discard(p)
                self.tokens[p] = token
                self.metrics.relay_partitions = len(self.tokens)
                log.info("relay: took partition %d (%s)", p, token)

    def owned(self) -> list[int]:
        return sorted(self.tokens)

    def holds(self, p: int) -> bool:
        return p in self.tokens

    def fenced(self, p: int) -> None:
        """A read refused: another copy took `p` after us, while we could not hear the revoke
        (counted even when the revoke arrived while the read was on its way)."""
        self.metrics.relay_fenced += 1
        if p not in self.tokens:
            return
        log.warning(
            "relay: partition %d was taken by another copy; this one no longer serves it (it "
            "was paused or cut off while the partition moved)",
            p,
        )
        self._drop(p)

    async def due_timers(
        self, p: int, key: str, now_ms: int, count: int
    ) -> list[tuple[str, float]] | None:
        """(member, due ms) of the due timers in `key`, oldest first, if we still own `p`;
        None when fenced (counted, `p` dropped)."""
        token = self.tokens.get(p)
        if token is None:
            return None
        args: list[str | int] = [token, "timers", now_ms, count]
        flat: Any = await self._read(keys=[self.keys.owner(p), key], args=args)
        if flat is None:
            self.fenced(p)
            return None
        return [(_text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def outbox_rows(
        self, p: int, key: str, start: bytes | str, end: str, count: int
    ) -> Rows | None:
        """XRANGE of `key` if we still own `p`; None when fenced (counted, `p` dropped)."""
        token = self.tokens.get(p)
        if token is None:
            return None
        args: list[str | bytes | int] = [token, "outbox", start, end, count]
        rows: Any = await self._read(keys=[self.keys.owner(p), key], args=args)
        if rows is None:
            self.fenced(p)
            return None
        return [(rid, dict(zip(f[::2], f[1::2], strict=True))) for rid, f in rows]


class Rebalance:  # an infra.rdkafka.Listener
    """Kafka's assignment -> `assigned` and the relay's ownership. A revoke drops the relay's
    partitions at once, then lets the batch in flight finish and commit before the partitions
    move to another copy."""

    def __init__(
        self,
        lock: asyncio.Lock,
        assigned: set[TopicPartition],
        ownership: Ownership,
        events_topic: str,
        forget: Callable[[list[int]], object] = lambda partitions: None,
    ) -> None:
        self.lock = lock
        self.assigned = assigned  # the daemon's set, changed in place
        self.ownership = ownership
        self.events_topic = events_topic
        #: drops what the daemon cached of the revoked partitions' sagas (engine/cache.py)
        self.forget = forget

    def _events(self, tps: Iterable[TopicPartition]) -> list[int]:
        return [tp.partition for tp in tps if tp.topic == self.events_topic]

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.ownership.revoke(self._events(revoked))
        async with self.lock:  # after the batch in flight, which may still cache its sagas
            self.assigned.difference_update(revoked)
            self.forget(sorted({tp.partition for tp in revoked}))
            if revoked:  # the first join calls this with nothing to revoke
                crash_point("orchestrator.in_revoke")
        log.info("partitions revoked: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned.update(assigned)
        self.ownership.assign(self._events(assigned))
        log.info("partitions assigned: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
