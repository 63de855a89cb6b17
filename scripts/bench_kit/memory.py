"""Redis bytes per saga, from MEMORY USAGE over every key under the bench's prefix.

Nothing here knows the engine's key layout; it only knows the saga ids the bench gave out
(`<kind><8 digits>`, see `load`). Every key under the prefix whose name holds such an id belongs
to that saga (its hash, history, dedupe set, tombstone, whatever the layout adds); every other
key is shared (state indexes, timers, outbox, offsets, in whatever shards). So:

    bytes per saga = mean over sampled sagas of the bytes of their own keys
                   + growth of the shared keys during the phase / sagas the phase added

The shared part is measured before and after the phase, so sagas that were there already
(the warm-up's, parked ones) do not count. MEMORY USAGE runs with SAMPLES 0: exact, not
estimated from a few elements.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from scripts.bench_kit.fleet import BenchError
from scripts.bench_kit.load import KINDS

SAGA_ID = re.compile(rf"(?:{'|'.join(KINDS)})\d{{8}}")
SCAN_COUNT = 5000
CHUNK = 1000


@dataclass
class KeySpace:
    """One pass over the keys under a prefix."""

    shared_bytes: int = 0
    shared_keys: int = 0
    #: own keys of the sampled sagas
    own: dict[str, list[str]] = field(default_factory=dict)
    keys: int = 0


async def _usage(redis: Redis, keys: list[str]) -> list[int]:
    out: list[int] = []
    for i in range(0, len(keys), CHUNK):
        async with redis.pipeline(transaction=False) as p:
            for k in keys[i : i + CHUNK]:
                p.memory_usage(k, samples=0)
            out += [int(x or 0) for x in await p.execute()]
    return out


async def scan(redis: Redis, prefix: str, sample: Collection[str] = ()) -> KeySpace:
    """Shared bytes under `prefix:`, and the keys of the saga ids in `sample`."""
    ks = KeySpace(own={sid: [] for sid in sample})
    shared: list[str] = []
    async for raw in redis.scan_iter(match=f"{prefix}:*", count=SCAN_COUNT):
        key = raw.decode() if isinstance(raw, bytes) else raw
        ks.keys += 1
        m = SAGA_ID.search(key, len(prefix))
        if m is None:
            shared.append(key)
        elif m.group(0) in ks.own:
            ks.own[m.group(0)].append(key)
    ks.shared_keys = len(shared)
    ks.shared_bytes = sum(await _usage(redis, shared))
    return ks


async def shared_bytes(redis: Redis, prefix: str) -> int:
    return (await scan(redis, prefix)).shared_bytes


async def per_saga(
    redis: Redis, prefix: str, ids: list[str], shared_before: int, sample_n: int, seed: int = 11
) -> dict[str, Any]:
    """Bytes per saga of the sagas `ids` (all added since `shared_before` was read)."""
    if not ids:
        return {"bytes_per_saga": None}
    sample = set(random.Random(seed).sample(ids, min(sample_n, len(ids))))
    ks = await scan(redis, prefix, sample)
    own = [sum(await _usage(redis, keys)) for keys in ks.own.values()]
    keys_per_saga = [len(keys) for keys in ks.own.values()]
    own_mean = sum(own) / len(own)
    shared_share = (ks.shared_bytes - shared_before) / len(ids)
    return {
        "bytes_per_saga": round(own_mean + shared_share),
        "own_keys_bytes": round(own_mean),
        "shared_keys_bytes": round(shared_share),
        "keys_per_saga": round(sum(keys_per_saga) / len(keys_per_saga), 2),
        "sampled": len(sample),
        "sagas": len(ids),
        "keys_under_prefix": ks.keys,
    }


async def used_memory(redis: Redis) -> int:
    """Redis's `used_memory`: everything it holds, ours or not."""
    return int((await redis.info("memory"))["used_memory"])


@dataclass
class Room:
    """Whether Redis has room for the sagas still to come, judged from what the first ones
    took: parking a million sagas into a Redis that cannot hold them would end in OOM errors
    (or the machine swapping) rather than a figure."""

    used0: int
    limit: int

    @classmethod
    async def of(cls, redis: Redis) -> Room:
        info = await redis.info("memory")
        limit = int(info.get("maxmemory") or 0) or int(info["total_system_memory"])
        return cls(int(info["used_memory"]), limit)

    async def check(self, redis: Redis, present: int, n: int) -> None:
        """A BenchError when `n` sagas would take Redis past 90% of its limit, at the bytes
        each of the `present` ones took (judged once there are at least 1,000)."""
        if present < 1000:
            return
        each = (await used_memory(redis) - self.used0) / present
        if self.used0 + each * n > 0.9 * self.limit:
            raise BenchError(
                f"{n} parked sagas need about {each * n / 2**30:.1f} GiB of Redis at "
                f"{each:.0f} bytes each; this Redis may use {self.limit / 2**30:.1f} GiB "
                "(maxmemory, or the machine's memory) and already uses "
                f"{self.used0 / 2**30:.1f} GiB"
            )
