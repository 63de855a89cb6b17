"""The Redis adapter: load sagas, apply steps atomically, and the outbox and timer structures.

One pipelined round trip loads every saga of a batch; one pipelined round trip applies every
step of a batch (each step is one `step.lua` call, atomic on its own).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from infra.redis import decoding_twin, is_cluster
from orchestrator.core.definition import Registry, SagaDefinition
from orchestrator.core.model import FINAL, SagaState, Transition
from orchestrator.engine import history as saga_history
from orchestrator.engine.history import HISTORY_CAP
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import (
    decode_fields,
    from_fields,
    iso,
    saga_type_of,
    stamp_times,
)
from orchestrator.engine.stepargs import StepArgs, StepKeys, script_argv

#: operator commands a saga remembers (their ids, so a copy never applies twice); one more is
#: refused and dead-lettered rather than forgotten (invariant 10, bounded)
SEEN_CAP = 64
#: hash fields that are not the saga's state (`to_fields`) and stay when a step rewrites it
KEPT = frozenset({"start_input"})


def _lua(name: str) -> str:
    return resources.files("orchestrator.engine").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class OutboxEntry:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    def encoded_headers(self) -> bytes:
        return orjson.dumps([[k, v.decode()] for k, v in self.headers])

    @classmethod
    def from_fields(cls, f: dict[bytes, bytes]) -> OutboxEntry:
        """The entry as `step.lua` wrote it (fields k, v, h); raises on a malformed one."""
        return cls(f[b"k"], f[b"v"], decode_headers(f[b"h"]))


def decode_headers(raw: bytes) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in orjson.loads(raw)]


@dataclass
class Write:
    """One input's effect on one saga, ready for `step.lua`."""

    saga_id: str
    message_id: str
    expected_version: int
    transition: Transition
    definition: SagaDefinition
    before_status: str | None
    outbox: list[OutboxEntry] = field(default_factory=list)
    event_name: str = ""
    #: how the input's id is remembered: "start" (a new saga), "seen" (an operator command)
    #: or "" (replies and timers: the state itself ignores a copy; see step.lua)
    remember: str = ""
    outbox_ids: list[bytes] = field(default_factory=list)
    #: the hash as it stands before this write; only fields that differ are sent
    before_fields: dict[str, str] = field(default_factory=dict)
    #: the history entries the hash after this write implies, when it implies them all
    #: (`step_call`; the store keeps them for the saga's next step)
    derived: list[str] | None = None
    #: the hash after this write (empty when the input is only recorded); `step_call` adds
    #: the start's id and the steps' times to it in place
    fields: dict[str, str] = field(default_factory=dict)


#: sagas whose implied history the store keeps between steps (about 1 KB each)
DERIVED_CAP = 20_000


@dataclass(frozen=True)
class WriteResult:
    status: str  # "ok" | "duplicate" | "conflict" | "refused" | "error" (nothing written)
    outbox_ids: list[bytes]
    error: Exception | None = None


class RedisStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        registry: Registry,
        retention_s: int,
        tombstone_retention_s: int = 0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.retention_s = retention_s
        self.tombstone_retention_s = tombstone_retention_s
        self._step = redis.register_script(_lua("step.lua"))
        self._loaded = False
        # Loads decode in hiredis (C) rather than field by field in Python.
        self._text = decoding_twin(redis)
        #: saga id -> (hash version, the history entries that hash implies), kept from the
        #: write that made that version (only once Redis said "ok"): the next step's `prior`
        #: without deriving it again (half the cost of the check in `step_call`)
        self._derived: dict[str, tuple[str, list[str]]] = {}

    async def aclose(self) -> None:
        await self._text.aclose()
        if not is_cluster(self._text):  # a cluster client closes its nodes' pools itself
            await self._text.connection_pool.disconnect()

    def definition_for(self, raw: dict[Any, Any]) -> SagaDefinition | None:
        t = saga_type_of(raw)
        return self.registry.version(*t) if t else None

    def parse(self, raw: dict[Any, Any], saga_id: str) -> SagaState | None:
        if not raw:
            return None
        d = self.definition_for(raw)
        return from_fields(raw, d, saga_id) if d else None

    async def load_raw(
        self, saga_ids: list[str], starting: Collection[str] = ()
    ) -> tuple[dict[str, dict[str, str]], set[str]]:
        """Every saga's hash fields as text, and which of the `starting` ids (sagas a start
        arrived for) are tombstoned, in one round trip."""
        asked = [sid for sid in saga_ids if sid in starting]
        async with self._text.pipeline(transaction=False) as pipe:
            for sid in saga_ids:
                pipe.hgetall(self.keys.saga(sid))
            for sid in asked:  # GET, not EXISTS: within the orchestrator's ACL already
                pipe.get(self.keys.tombstone(sid))
            rows = await pipe.execute()
        raws = {sid: decode_fields(row) for sid, row in zip(saga_ids, rows, strict=False)}
        gone = {sid for sid, t in zip(asked, rows[len(saga_ids) :], strict=True) if t is not None}
        return raws, gone

    def step_call(self, w: Write) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of `step.lua` for one write (see `stepargs`)."""
        t, k = w.transition, self.keys
        state = t.state
        assert state is not None
        new_status = state.status.value
        applied = t.outcome == "applied"
        shard = k.shard_of(w.saga_id)  # every key of the step in the saga's slot
        part = k.partition(w.saga_id)  # its relay's partition: the same slot on a cluster
        keys = StepKeys(
            saga=k.saga(w.saga_id),
            history=k.history(w.saga_id),
            seen=k.seen(w.saga_id),
            outbox=k.outbox_of(part),
            timers=k.timers_of(part),
            old_index=k.index(w.before_status or new_status, shard),
            new_index=k.index(new_status, shard),
            tombstone=k.tombstone(w.saga_id),
        )
        names = [sd.name for sd in w.definition.steps]
        if applied:  # in place: the daemon's next write and the state cache read this dict
            self._complete_fields(w, names)
        # Only what changed: a step touches a handful of fields. A field left out now (back at
        # its default, a shorter value needs fewer pieces, or the layout of an older version)
        # is removed.
        changed = (
            [x for k, v in w.fields.items() if w.before_fields.get(k) != v for x in (k, v)]
            if applied
            else []
        )
        dropped = (
            [k for k in w.before_fields if k not in w.fields and k not in KEPT] if applied else []
        )
        at = iso(state.updated_ms if applied else int(time.time() * 1000))
        entry = saga_history.encode(at, w.event_name, t.outcome, new_status, t.note, w.message_id)
        # No list while the hash implies every entry (history.py): is this one implied too?
        known = self._derived.get(w.saga_id)
        if known is not None and known[0] == w.before_fields.get("version"):
            prior = known[1]
        else:
            prior = saga_history.derive(w.before_fields, w.saga_id, names)
        after = saga_history.derive(w.fields, w.saga_id, names) if applied else []
        omit = applied and after == [*prior, entry]
        w.derived = after if omit else None
        args = StepArgs(
            # A stray reply is recorded but its id is not remembered: a forger who reuses the
            # id of a genuine reply must not make the genuine one look like a duplicate.
            message_id="" if t.stray else w.message_id,
            expected_version=w.expected_version,
            applied=applied,
            saga_id=w.saga_id,
            entered_ms=state.entered_ms,
            state_changed=applied and w.before_status != new_status,
            final=state.status in FINAL,
            retention_s=self.retention_s,
            tombstone_retention_s=self.tombstone_retention_s,
            fields=changed,
            drop_fields=dropped,
            history=entry,
            history_cap=HISTORY_CAP,
            remember="" if t.stray else w.remember,
            skip_recorded=t.duplicate and not applied,
            seen_cap=SEEN_CAP,
            timers=[x for timer in t.timers for x in (str(timer.due_ms), timer.member)],
            cancel_timers=list(t.cancel_timers),
            history_omit=omit,
            history_backfill=[] if omit else prior,
        )
        outbox = [(e.key, e.value, e.encoded_headers()) for e in w.outbox]
        return keys.as_list(), script_argv(args, outbox)

    @staticmethod
    def _complete_fields(w: Write, names: list[str]) -> None:
        """Add to an applied write's hash what `to_fields` does not hold: the start's
        `<event> <id>`, the fields kept from before (`KEPT`) and each completed step's time
        (`statecodec.stamp_times`), which `history.derive` reads."""
        state = w.transition.state
        assert state is not None
        extra = {k: w.before_fields[k] for k in KEPT if k in w.before_fields}
        if w.remember == "start":
            extra["start_input"] = f"{w.event_name} {w.message_id}"
        stamped = stamp_times(w.before_fields, w.fields, names, state.updated_ms, state.created_ms)
        if stamped is not w.fields or extra.keys() - w.fields.keys():
            merged = stamped | {k: v for k, v in extra.items() if k not in w.fields}
            w.fields.clear()
            w.fields.update(merged)

    async def apply(self, writes: list[Write]) -> list[WriteResult]:
        """Apply steps in order in one round trip; each is atomic on its own, so one step
        refused (OOM, READONLY...) comes back as an "error" result beside the others' results.
        A failure of the round trip itself (connection lost) raises."""
        if not writes:
            return []
        cluster = is_cluster(self.redis)
        if cluster and not self._loaded:  # a cluster pipeline cannot load it on the way
            await self.redis.script_load(self._step.script)  # on every master
            self._loaded = True
        async with self.redis.pipeline(transaction=False) as pipe:
            for w in writes:
                keys, args = self.step_call(w)
                if cluster:  # redis-py refuses pipe.evalsha on a cluster; the command itself
                    pipe.execute_command("EVALSHA", self._step.sha, len(keys), *keys, *args)
                else:
                    await self._step(keys=keys, args=args, client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in replies):
            self._loaded = False  # a master restarted or failed over: loaded again next time
        out = []
        for w, r in zip(writes, replies, strict=True):
            self._derived.pop(w.saga_id, None)
            if isinstance(r, Exception):  # the script checks before its first write
                out.append(WriteResult("error", [], r))
                continue
            code = int(r[0])
            status = {1: "ok", 0: "duplicate", -2: "refused"}.get(code, "conflict")
            out.append(WriteResult(status, list(r[1:]) if code == 1 else []))
            state = w.transition.state  # a final saga takes no more steps
            if code == 1 and w.derived is not None and state and state.status not in FINAL:
                self._derived[w.saga_id] = (w.fields.get("version", ""), w.derived)
                if len(self._derived) > DERIVED_CAP:  # the oldest first
                    del self._derived[next(iter(self._derived))]
        return out

    # ---- outbox and timers, per partition (None: the global keys of older versions) ----
    def outbox_key(self, part: int | None) -> str:
        return self.keys.old_outbox if part is None else self.keys.outbox_of(part)

    def timers_key(self, part: int | None) -> str:
        return self.keys.old_timers if part is None else self.keys.timers_of(part)

    async def outbox_delete(self, ids: list[bytes], part: int | None) -> None:
        if ids:
            await self.redis.xdel(self.outbox_key(part), *ids)

    async def outbox_delete_written(self, written: list[tuple[str, bytes]]) -> None:
        """Delete (saga id, outbox id) entries, each from its saga's partition, in one round
        trip."""
        by_part: dict[int, list[bytes]] = {}
        for saga_id, oid in written:
            by_part.setdefault(self.keys.partition(saga_id), []).append(oid)
        async with self.redis.pipeline(transaction=False) as pipe:
            for part, ids in by_part.items():
                pipe.xdel(self.keys.outbox_of(part), *ids)
            await pipe.execute()

    async def outbox_depth(self) -> int:
        """Entries in every partition's outbox (and the old global one, on one Redis)."""
        total = 0
        for part in self.relay_parts():
            total += int(await self.redis.xlen(self.outbox_key(part)))
        return total

    def relay_parts(self) -> list[int | None]:
        """Every partition the relay serves, and None (the old global keys) on one Redis."""
        old: list[int | None] = [] if self.keys.shards else [None]
        return [*self.keys.all_partitions(), *old]

    async def remove_timers(self, members: list[str], part: int | None) -> None:
        if members:
            await self.redis.zrem(self.timers_key(part), *members)

    async def postpone_timers(self, due_ms: dict[str, int], part: int | None) -> None:
        """Move timers to a later due time; a timer the daemon removed meanwhile stays gone."""
        if due_ms:
            await self.redis.zadd(self.timers_key(part), dict(due_ms), xx=True)

    # ---- history ----
    async def history(self, saga_id: str, count: int = HISTORY_CAP) -> list[dict[str, str]]:
        return await saga_history.read(self.redis, self.keys.history(saga_id), count)
