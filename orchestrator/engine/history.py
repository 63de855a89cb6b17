"""A saga's history: what each input did, and when, oldest first, the last `HISTORY_CAP` kept.

Stored as a Redis list `<prefix>:<id>:history`, one JSON array per entry:

    ["2026-05-01T12:00:00.123+00:00","StepCompleted","applied","pending",
     "completed reserve_inventory#1: started -> pending","order-7:reserve_inventory:action:1:reply"]

(at, event, outcome, state, note, input), readable with `redis-cli LRANGE saga:<id>:history 0 -1`.
A list rather than a stream: a stream allocates its first node whole (about 4.7 KB for a saga's
five entries), a list of short entries costs what they hold. Sagas written by an older version
keep a stream until their next step converts it (`step.lua`); `read` reads either.
Everything that shows a history (the CLI, the HTTP API, tests, the bench) reads it here.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

#: entries kept per saga; older ones are dropped as new ones arrive (invariant 10, bounded)
HISTORY_CAP = 64
FIELDS = ("at", "event", "outcome", "state", "note", "input")


def encode(at: str, event: str, outcome: str, state: str, note: str, input_id: str) -> str:
    return orjson.dumps([at, event, outcome, state, note, input_id]).decode()


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
    """The first `count` entries of a history, oldest first, whichever way it is stored."""
    kind = _text(await redis.type(key))
    if kind == "stream":  # written by an older version, not converted yet
        rows: Any = await redis.xrange(key, count=count)
        return [{_text(k): _text(v) for k, v in f.items()} for _, f in rows]
    if kind != "list":
        return []
    return [decode(e) for e in await redis.lrange(key, 0, count - 1)]
