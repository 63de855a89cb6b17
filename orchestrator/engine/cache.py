"""The partition owner's cache of the sagas it stepped: their decoded state and hash fields.

A saga's inputs all arrive on one partition, and one copy owns it, so that copy nearly always
holds the saga as it last wrote it. The cache keeps it (bounded, least recently used first
out), so the next input is decided without an HGETALL and without parsing the hash again.

Why a stale entry is harmless: an entry carries the version its step wrote, and `step.lua`
applies a step only when the saga's version in Redis is still the one it was decided on. Any
other change (another copy's step after a rebalance, a direct write by another store, a
deletion) moved the version on, so the step answers "conflict", writes nothing, and the daemon
drops the entry and reloads the saga from Redis (its existing conflict path). Compaction
rewrites a hash without changing its version, but only a completed saga's, and a final saga is
never kept here. A revoke drops the entries of the revoked partitions (the new owner will
write them), and so does anything the daemon cannot vouch for (a duplicate, a refused or
failed step). A hash changed by hand without bumping `version` is not noticed while cached:
edit sagas through the operator commands, which are steps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.core.model import FINAL, SagaState

if TYPE_CHECKING:
    from orchestrator.engine.store import RedisStore, Write

__all__ = ["Cached", "Loaded", "StateCache", "load"]


@dataclass(frozen=True)
class Cached:
    """A saga as its last step here wrote it: the decoded state and the hash's fields (the
    next step sends only the fields that differ from these)."""

    state: SagaState
    fields: dict[str, str]


class StateCache:
    """At most `size` sagas by id, least recently used first out; `size` 0 keeps nothing."""

    def __init__(self, size: int, partition_of: Callable[[str], int]) -> None:
        if size < 0:
            raise ValueError(f"state cache size must be 0 or more, not {size}")
        self.size = size
        self._partition_of = partition_of
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, saga_id: object) -> bool:
        return saga_id in self._entries

    def get(self, saga_id: str) -> Cached | None:
        entry = self._entries.get(saga_id)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(saga_id)
        self.hits += 1
        return entry

    def peek(self, saga_id: str) -> Cached | None:
        """The entry, without counting or refreshing it (tests, diagnostics)."""
        return self._entries.get(saga_id)

    def put(self, state: SagaState, fields: dict[str, str]) -> None:
        """Keep what a step just wrote; a final saga leaves (it takes no more steps, and
        compaction rewrites it without a new version)."""
        sid = state.saga_id
        if self.size == 0 or state.status in FINAL or not fields:
            self._entries.pop(sid, None)
            return
        self._entries[sid] = Cached(state, fields)
        self._entries.move_to_end(sid)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def after_write(self, w: Write, status: str) -> None:
        """Keep what an applied step ("ok") left; after anything else (a conflict, a
        duplicate, a refused or failed step) Redis may hold another version than the one the
        step was decided on: forget the saga, so its next input reads it."""
        if status == "ok" and w.transition.state is not None:
            self.put(w.transition.state, w.fields or w.before_fields)
        else:
            self.drop(w.saga_id)

    def counts(self) -> tuple[int, int]:
        """(hits, misses) so far."""
        return self.hits, self.misses

    def drop(self, saga_id: str) -> None:
        self._entries.pop(saga_id, None)

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the sagas of `partitions` (revoked: another copy will step them); returns
        how many were dropped."""
        gone = set(partitions)
        if not gone or not self._entries:
            return 0
        stale = [sid for sid in self._entries if self._partition_of(sid) in gone]
        for sid in stale:
            del self._entries[sid]
        return len(stale)

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class Loaded:
    """Sagas ready to be decided on: each one's hash fields (empty: no saga yet) and state
    (None: none, or a type this process does not know), and which of the starting ids are
    tombstoned."""

    raws: dict[str, dict[str, str]] = field(default_factory=dict)
    states: dict[str, SagaState | None] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)


async def load(
    cache: StateCache, store: RedisStore, saga_ids: list[str], starting: Collection[str]
) -> Loaded:
    """The cached sagas as they are, the others from Redis in one round trip (none when every
    saga is cached). A cached saga exists and is not final, so it has no tombstone to ask for."""
    out = Loaded()
    missing = []
    for sid in saga_ids:
        entry = cache.get(sid)
        if entry is None:
            missing.append(sid)
            continue
        out.raws[sid] = entry.fields
        out.states[sid] = entry.state
    if missing:
        raws, out.gone = await store.load_raw(missing, starting)
        for sid, raw in raws.items():
            out.raws[sid] = raw
            out.states[sid] = store.parse(raw, sid)
    return out
