"""A saga's history: what each input did, and when, oldest first, the last `HISTORY_CAP` kept.

Stored as a Redis list `<prefix>:<id>:history`, one JSON array per entry:

    ["2026-05-01T12:00:00.123+00:00","StepCompleted","applied","pending",
     "completed reserve_inventory#1: started -> pending","order-7:reserve_inventory:action:1:reply"]

(at, event, outcome, state, note, input), readable with `redis-cli LRANGE saga:<id>:history 0 -1`.

A saga that only went forward has no list: its start and each completed step are in its hash
(`start_input` is `<event> <id>`, each completed step's field its time, `@259`: ms after
`created_at`), and `derive` rebuilds those entries exactly as they would have been stored. The
step writes an entry only when it is not what `derive` would rebuild (`store.step_call` checks
it); the first such entry comes with the derived ones before it (`step.lua`), and from then on
the list holds every entry. So an in-flight order saga costs no list key (about 800 bytes).
A list rather than a stream: a stream allocates its first node whole (about 4.7 KB for a saga's
five entries), a list of short entries costs what they hold. Sagas written by an older version
keep a stream until their next step converts it (`step.lua`); `read` reads either.
Everything that shows a history (the CLI, the HTTP API, tests, the bench) reads it here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from orchestrator.engine.statecodec import SUMMARY, decode_fields, from_iso, iso, time_of, whole

#: entries kept per saga; older ones are dropped as new ones arrive (invariant 10, bounded)
HISTORY_CAP = 64
FIELDS = ("at", "event", "outcome", "state", "note", "input")
#: how the core's note ends for the completion that completes the saga (`core/stages.py`)
ALL_DONE = " (all steps completed)"


def encode(at: str, event: str, outcome: str, state: str, note: str, input_id: str) -> str:
    return orjson.dumps([at, event, outcome, state, note, input_id]).decode()


def derive(raw: dict[Any, Any], saga_id: str, steps: Iterable[str] = ()) -> list[str]:
    """The entries a saga that only went forward would hold, from its hash (see above): its
    start, then each step whose action completed, by time. Empty for a hash that does not
    carry them (compacted, written by an older version, or not started here). It runs twice
    on every step (`store.step_call`), so it reads only the fields it needs: the `steps`
    named, when the caller knows them, else every `step.` field."""
    f = decode_fields(raw)
    event, _, start_id = (f.get("start_input") or "").partition(" ")
    if not start_id or SUMMARY in f or "saga_id" in f:
        return []  # no start of this layout, compacted, or an older layout
    try:
        created = from_iso(f.get("created_at", ""))
    except ValueError:  # missing, or edited by hand
        return []
    out = [encode(iso(created), event, "applied", "started", "start: -> started", start_id)]
    done = []
    names = [f"step.{n}" for n in steps] or [n for n in f if n.startswith("step.")]
    for name in names:
        first = f.get(name)
        if first is None or "@" not in first or "~" in name:
            continue  # a step's time is in its value's head, in the first piece
        value = whole(f, name) or ""
        ms = time_of(value) if not name.endswith(".error") else None
        if ms is not None:
            attempt = next((t[2:] for t in value.split(" {")[0].split() if t[:2] == "a="), "0")
            done.append((ms, name[len("step.") :], attempt))
    state = "started"
    for i, (ms, step, attempt) in enumerate(sorted(done)):
        last = i == len(done) - 1 and f.get("state") == "completed"
        to = "completed" if last else "pending"
        note = f"completed {step}#{attempt}: {state} -> {to}" + (ALL_DONE if last else "")
        reply = f"{saga_id}:{step}:action:{attempt}:reply"
        out.append(encode(iso(created + ms), "StepCompleted", "applied", to, note, reply))
        state = to
    return out


def decode(raw: bytes | str) -> dict[str, str]:
    """One list entry as `{at, event, outcome, state, note, input}`; an entry that is not a
    JSON array of texts (written by hand) is shown as its note."""
    try:
        values = orjson.loads(raw)
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        return dict.fromkeys(FIELDS, "") | {"note": text}
    return dict(zip(FIELDS, values + [""] * (len(FIELDS) - len(values)), strict=False))


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


async def read(redis: Redis, key: str, count: int = HISTORY_CAP) -> list[dict[str, str]]:
    """The first `count` entries of a history (`<saga key>:history`), oldest first, whichever
    way it is stored, or derived from the saga's hash when it has no list (see above)."""
    kind = _text(await redis.type(key))
    if kind == "stream":  # written by an older version, not converted yet
        rows: Any = await redis.xrange(key, count=count)
        return [{_text(k): _text(v) for k, v in f.items()} for _, f in rows]
    if kind == "list":
        return [decode(e) for e in await redis.lrange(key, 0, count - 1)]
    if kind != "none" or not key.endswith(":history"):
        return []
    saga_key = key[: -len(":history")]
    # a saga id holds no ':' (schemas.messages.SAGA_ID_PATTERN): it is the key's last part
    raw: Any = await redis.hgetall(saga_key)
    return [decode(e) for e in derive(raw, saga_key.rsplit(":", 1)[-1])[:count]]
