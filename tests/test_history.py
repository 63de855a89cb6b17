"""A saga's history (orchestrator/engine/history.py) on the real Redis and the Redis Cluster: a
saga that only went forward keeps no list and its entries are derived from its hash, exactly as
they would have been stored; the first entry the hash does not imply writes the derived ones
before it; copies of derived inputs stay duplicates; compaction still finds each step's time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from infra.redis import client
from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry
from orchestrator.core.model import Event, Reply, Start, command_id
from orchestrator.engine import history
from orchestrator.engine.compact import compact_one
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import (
    SUMMARY,
    decode_fields,
    iso,
    join_long,
    stamp_times,
    time_of,
    to_fields,
)
from orchestrator.engine.store import RedisStore, Write
from participants.samples.order.saga import ORDER_FULFILLMENT
from schemas.config import Settings
from tests.conftest import BOTH_REDIS

pytestmark = BOTH_REDIS

D = ORDER_FULFILLMENT
REG = Registry([D])
STEPS = [s.name for s in D.steps]
T0 = 1_767_261_600_000
#: the message class names the daemon records as the event (`type(msg).__name__`)
EVENT = {"completed": "StepCompleted", "failed": "StepFailed", "compensated": "StepCompensated"}


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[RedisStore]:
    s = RedisStore(client(settings), Keys.of(settings), REG, 3600, 60)
    yield s
    await s.aclose()
    await s.redis.aclose()


def reply_id(sid: str, step: str, attempt: int = 1, compensation: bool = False) -> str:
    """The id the participant SDK gives a reply."""
    return f"{command_id(sid, step, compensation, attempt)}:reply"


async def step(store: RedisStore, sid: str, event: Event, now: int, msg_id: str = "") -> str:
    """One input through decide and the real step script, as the daemon applies it; returns
    the write's status ("ok", "duplicate")."""
    raws, _ = await store.load_raw([sid])
    raw = raws[sid]
    state = store.parse(raw, sid)
    name = "StartOrder"
    if isinstance(event, Reply):
        name = EVENT[event.kind]
        if state is not None:  # answers the command issued
            cid = command_id(sid, event.step, event.compensation, event.attempt)
            event = replace(event, command_id=cid)
        msg_id = msg_id or reply_id(sid, event.step, event.attempt, event.compensation)
    t = decide(state, event, now, REG)
    assert t.state is not None, t.note
    w = Write(
        saga_id=sid,
        message_id=msg_id,
        expected_version=state.version if state else 0,
        transition=t,
        definition=D,
        before_status=state.status.value if state else None,
        event_name=name,
        remember="start" if isinstance(event, Start) and t.outcome == "applied" else "",
        before_fields=raw,
        fields=to_fields(t.state, D) if t.outcome == "applied" else {},
    )
    (result,) = await store.apply([w])
    assert result.status in ("ok", "duplicate"), result
    return result.status


def start(sid: str) -> Start:
    return Start(sid, D.name, {"orderId": sid, "amount": "59.90"}, "", "")


def ok(name: str) -> Reply:
    return Reply("completed", name, 1, result={"ref": f"{name}-ref"})


def stored(sid: str, *entries: tuple[int, str, str, str, str, str]) -> list[dict[str, str]]:
    """The entries as the list would hold them: (ms after T0, event, outcome, state, note,
    input)."""
    return [history.decode(history.encode(iso(T0 + ms), *rest)) for ms, *rest in entries]


def forward(sid: str, steps: int) -> list[tuple[int, str, str, str, str, str]]:
    out = [(0, "StartOrder", "applied", "started", "start: -> started", f"start-{sid}")]
    state = "started"
    for i, name in enumerate(STEPS[:steps]):
        to = "completed" if i == len(STEPS) - 1 else "pending"
        note = f"completed {name}#1: {state} -> {to}" + (
            history.ALL_DONE if to == "completed" else ""
        )
        out.append((1000 * (i + 1), "StepCompleted", "applied", to, note, reply_id(sid, name)))
        state = to
    return out


async def run_forward(store: RedisStore, sid: str, steps: int) -> None:
    assert await step(store, sid, start(sid), T0, f"start-{sid}") == "ok"
    for i, name in enumerate(STEPS[:steps]):
        assert await step(store, sid, ok(name), T0 + 1000 * (i + 1)) == "ok"


async def test_a_forward_saga_keeps_no_list_and_reads_the_same(store: RedisStore) -> None:
    """Start and completions only: no list key at any step, and `read` derives the entries the
    list would have held (times, events, notes, ids), through to the saga's completion."""
    sid, k, r = "hist-fwd", store.keys, store.redis
    assert await step(store, sid, start(sid), T0, f"start-{sid}") == "ok"
    assert await r.exists(k.history(sid)) == 0
    assert await history.read(r, k.history(sid)) == stored(sid, *forward(sid, 0))
    for i, name in enumerate(STEPS):
        assert await step(store, sid, ok(name), T0 + 1000 * (i + 1)) == "ok"
        assert await r.exists(k.history(sid)) == 0
        assert await history.read(r, k.history(sid)) == stored(sid, *forward(sid, i + 1))
    raw = join_long(decode_fields(await r.hgetall(k.saga(sid))))
    assert raw["start_input"] == f"StartOrder start-{sid}"  # readable: what started it, its id
    assert [time_of(raw[f"step.{n}"]) for n in STEPS] == [1000, 2000, 3000, 4000]
    assert await history.read(r, k.history(sid), 2) == stored(sid, *forward(sid, 1))


async def test_the_first_other_entry_writes_the_derived_ones_first(store: RedisStore) -> None:
    """Two plain steps, then a failure: the list appears with the start and both completions
    before the failure, and every later entry (the compensations) is appended to it."""
    sid, k, r = "hist-fail", store.keys, store.redis
    await run_forward(store, sid, 2)
    assert await r.exists(k.history(sid)) == 0
    failed = Reply("failed", STEPS[2], 1, reason="no courier")
    assert await step(store, sid, failed, T0 + 3000) == "ok"
    entries = await history.read(r, k.history(sid))
    assert await r.llen(k.history(sid)) == 4
    assert entries[:3] == stored(sid, *forward(sid, 2))
    assert entries[3]["event"] == "StepFailed" and entries[3]["state"] == "compensating"
    assert entries[3]["input"] == reply_id(sid, STEPS[2])
    comp = Reply("compensated", STEPS[1], 1, compensation=True)
    assert await step(store, sid, comp, T0 + 4000) == "ok"
    assert await r.llen(k.history(sid)) == 5
    assert (await history.read(r, k.history(sid)))[:4] == entries


async def test_another_copys_step_is_not_missed(store: RedisStore, settings: Settings) -> None:
    """The store keeps the entries a hash implies between a saga's steps, per hash version: a
    step another copy made meanwhile (a new version) is derived again, so the list that a
    failure then creates holds that copy's completion too."""
    sid, k, r = "hist-two-copies", store.keys, store.redis
    await run_forward(store, sid, 1)  # this store now holds the version-2 entries
    other = RedisStore(client(settings), Keys.of(settings), REG, 3600, 60)
    try:
        assert await step(other, sid, ok(STEPS[1]), T0 + 2000) == "ok"
    finally:
        await other.aclose()
        await other.redis.aclose()
    failed = Reply("failed", STEPS[2], 1, reason="no courier")
    assert await step(store, sid, failed, T0 + 3000) == "ok"
    entries = await history.read(r, k.history(sid))
    assert entries[:3] == stored(sid, *forward(sid, 2)), entries
    assert entries[3]["event"] == "StepFailed"


async def test_copies_of_derived_inputs_write_nothing(store: RedisStore) -> None:
    """A redelivered copy of a completion the hash implies is a duplicate that writes nothing
    (no list appears); the start again is refused by `start_input`; a copy under another id is
    recorded once, after the derived entries; an older hash's bare `start_input` still
    refuses a replayed start."""
    sid, k, r = "hist-dup", store.keys, store.redis
    await run_forward(store, sid, 2)
    version = (await r.hget(k.saga(sid), "version")).decode()
    assert await step(store, sid, ok(STEPS[0]), T0 + 5000) == "duplicate"
    assert await step(store, sid, start(sid), T0 + 5000, f"start-{sid}") == "duplicate"
    assert await r.exists(k.history(sid)) == 0
    assert (await r.hget(k.saga(sid), "version")).decode() == version
    assert await step(store, sid, ok(STEPS[0]), T0 + 6000, "another-id") == "ok"  # recorded
    entries = await history.read(r, k.history(sid))
    assert entries[:3] == stored(sid, *forward(sid, 2))
    assert [e["outcome"] for e in entries[3:]] == ["ignored"]
    assert await step(store, sid, ok(STEPS[0]), T0 + 7000, "another-id") == "duplicate"
    assert await r.llen(k.history(sid)) == 4

    old = "hist-dup-old"  # a hash written before the event went into `start_input`
    await run_forward(store, old, 1)
    await r.hset(k.saga(old), "start_input", f"start-{old}")
    assert await step(store, old, start(old), T0 + 5000, f"start-{old}") == "duplicate"


async def test_compaction_takes_the_times_from_the_hash(store: RedisStore) -> None:
    """A forward-only completed saga (no list) compacts to the summary with each step's time,
    as one with a list does."""
    sid, k, r = "hist-cmp", store.keys, store.redis
    await run_forward(store, sid, len(STEPS))
    assert await r.exists(k.history(sid)) == 0
    assert await compact_one(r, k, sid) is True
    summary = decode_fields(await r.hgetall(k.saga(sid)))[SUMMARY]
    assert summary == "completed@1000 completed@2000 completed@3000 completed@4000"
    assert await history.read(r, k.history(sid)) == []  # compacted: the history went


async def test_derive_and_stamp_on_their_own(store: RedisStore) -> None:
    """`derive` gives nothing for what does not carry it (a summary, an older layout, a bare
    `start_input`, times edited by hand); `stamp_times` stamps a step this write completes,
    keeps a time once written and never stamps a step completed before (an older layout)."""
    base = {"type": D.name, "state": "pending", "version": "2", "created_at": iso(T0)}
    start_input = {"start_input": "StartOrder s-1"}
    assert history.derive(base | start_input, "s") != []
    assert history.derive(base | {"start_input": "s-1"}, "s") == []
    assert history.derive(base | start_input | {SUMMARY: "completed"}, "s") == []
    assert history.derive(base | start_input | {"saga_id": "s"}, "s") == []
    assert history.derive(base | start_input | {"created_at": "yesterday"}, "s") == []
    errored = {f"step.{STEPS[0]}.error": "card @12 declined"}
    assert len(history.derive(base | start_input | errored, "s")) == 1

    names = STEPS
    running = {f"step.{STEPS[0]}": "running a=1"}
    done = {f"step.{STEPS[0]}": 'completed a=1 {"ref":"x"}'}
    assert stamp_times(running, done, names, T0 + 250, T0) == {
        f"step.{STEPS[0]}": 'completed a=1 @250 {"ref":"x"}'
    }
    stamped = {f"step.{STEPS[0]}": 'completed a=1 @250 {"ref":"x"}'}
    compensating = {f"step.{STEPS[0]}": 'compensating a=1 c=1 {"ref":"x"}'}
    assert stamp_times(stamped, compensating, names, T0 + 900, T0) == {
        f"step.{STEPS[0]}": 'compensating a=1 c=1 @250 {"ref":"x"}'
    }
    old_layout = {f"step.{STEPS[0]}.status": "completed", f"step.{STEPS[0]}.attempts": "1"}
    assert stamp_times(old_layout, done, names, T0 + 900, T0) == done
    assert stamp_times(running, running, names, T0 + 900, T0) is running
    long: dict[str, Any] = {"ref": "r" * 60}
    split = stamp_times(
        running,
        {f"step.{STEPS[0]}": f"completed a=1 {orjson.dumps(long).decode()}"},
        names,
        T0 + 5,
        T0,
    )
    assert f"step.{STEPS[0]}~2" in split and time_of(join_long(split)[f"step.{STEPS[0]}"]) == 5
