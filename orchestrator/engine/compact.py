"""Compaction: a completed saga, after a grace period, becomes one small summary hash.

A completed saga ignores every input, so what a person, a query or a late duplicate needs of it
is its type, state, version, times and each step's outcome (`statecodec.summary_fields`). Its
hash (data, results, traceparent, start id), history list and seen set are replaced by that
summary, which keeps the saga's TTL: about 300 bytes instead of about 2 KB while it is retained.

The relay calls `compact_shard` each round: on a Redis Cluster for each shard (partition) it
owns, on one Redis (one index for all) the owner of partition 0 with `shard=None`. Candidates
come from the `completed` index (scored by the time the saga completed), oldest first, after a
cursor (`cursor_key`: the score up to which every saga was tried), so a round never reads the
sagas it compacted before. Each saga is read, its summary built
here, and swapped in by `lua/compact.lua`, which first checks the saga is still completed, not
compacted yet, at the version read, with the history length read: a step or a recorded input
in between makes it read again, so nothing written meanwhile is lost without being seen. A
saga that only went forward has no list; its steps' times come from its hash (`history.derive`).
Idempotent: a saga compacted already is left as it is.

What is not compacted stays whole until it expires: a hash that is not a listpack (its step
order is not kept), a choreography saga (the tracker's), one written by an older version or
edited by hand (it does not parse), one that kept changing under `ATTEMPTS` reads, and a saga
that completed with a timestamp below the cursor (a copy whose clock was far behind).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from orchestrator.engine import history as saga_history
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import summary_fields

log = logging.getLogger(__name__)

#: reads of one saga that changed under the compaction before it is left for the next round
ATTEMPTS = 3
_SCRIPT = resources.files("orchestrator.engine").joinpath("lua", "compact.lua").read_text()


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _index_shard(keys: Keys, partition: int | None) -> int | None:
    """The shard whose `completed` index holds the partition's sagas (None on one Redis)."""
    return partition if keys.shards else None


def cursor_key(keys: Keys, partition: int | None) -> str:
    """Where a partition's compaction cursor is: beside its `completed` index; on one Redis,
    where the partitions share the index, one per partition (and one for all, None)."""
    index = keys.index("completed", _index_shard(keys, partition))
    own = partition is not None and not keys.shards
    return f"{index}:compacted" + (f":{partition}" if own else "")


async def compact_one(redis: Any, keys: Keys, saga_id: str) -> bool:
    """Compact one completed saga now; False when it is not one that can be (see above)."""
    script = redis.register_script(_SCRIPT)
    call = [keys.saga(saga_id), keys.history(saga_id), keys.seen(saga_id)]
    for _ in range(ATTEMPTS):
        async with redis.pipeline(transaction=False) as p:
            p.hgetall(call[0])
            p.lrange(call[1], 0, -1)
            raw, entries = await p.execute(raise_on_error=False)
        if isinstance(raw, Exception) or isinstance(entries, Exception):
            return False  # not a hash, or a stream history of an older version
        # a saga that only went forward has no list: its entries come from its hash
        shown = entries or saga_history.derive(raw, saga_id)
        fields = summary_fields(raw, [saga_history.decode(e) for e in shown])
        if fields is None:
            return False
        version = fields["version"]
        args = [version, len(entries), *(x for kv in fields.items() for x in kv)]
        done = int(await script(keys=call, args=args))
        if done >= 0:
            return done == 1
    log.info("saga %s changed under its compaction %d times; left for later", saga_id, ATTEMPTS)
    return False


async def compact_shard(
    redis: Any, keys: Keys, shard: int | None, older_than_ms: int, limit: int
) -> int:
    """Compact up to `limit` sagas of partition `shard` (None: every saga of one Redis) that
    completed at or before `older_than_ms` (epoch ms: now minus `SAGA_COMPACT_AFTER_S`);
    returns how many it compacted."""
    if limit <= 0:
        return 0
    index = keys.index("completed", _index_shard(keys, shard))
    cursor = cursor_key(keys, shard)
    low = _text(await redis.get(cursor) or "")
    rows: Any = await redis.zrangebyscore(
        # a cursor that is not a number (edited by hand) starts over: compacting is idempotent
        index,
        f"({low}" if low.isdigit() else "-inf",
        older_than_ms,
        start=0,
        num=limit,
        withscores=True,
    )
    if len(rows) == limit:
        # A full page may have cut a group of sagas that completed in the same millisecond:
        # the group is taken whole (it is as large as the completions of one millisecond), so
        # the cursor can move past its score without skipping any.
        last = rows[-1][1]
        tie: Any = await redis.zrangebyscore(index, last, last, withscores=True)
        rows = [row for row in rows if row[1] < last] + list(tie)
    compacted = 0
    for member, _ in rows:
        sid = _text(member)
        # On one Redis every partition's sagas share the index: each owner takes its own.
        if (shard is None or keys.shards or keys.partition(sid) == shard) and await compact_one(
            redis, keys, sid
        ):
            compacted += 1
    if rows:
        await redis.set(cursor, int(rows[-1][1]))
    return compacted
