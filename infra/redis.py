"""Every Redis client the project builds comes from here, configured from `Settings`.

Timeouts are set on every client: connecting waits `connect_timeout_s`; a command waits at least
10 s (a large pipeline on a busy server is slow, not lost).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis as sync_redis_lib
from redis.asyncio import Redis

from schemas.config import Settings


def _options(settings: Settings, decode: bool, timeout_s: float | None) -> dict[str, Any]:
    return {
        "decode_responses": decode,
        "socket_connect_timeout": settings.connect_timeout_s,
        "socket_timeout": timeout_s or max(10.0, settings.connect_timeout_s),
    }


def client(settings: Settings, *, decode: bool = False, timeout_s: float | None = None) -> Redis:
    """An asyncio client; `decode=True` returns text instead of bytes (decoded in hiredis)."""
    return Redis.from_url(settings.redis_url, **_options(settings, decode, timeout_s))


def sync_client(
    settings: Settings, *, decode: bool = False, timeout_s: float | None = None
) -> sync_redis_lib.Redis:
    """A blocking client, for tools that run outside an event loop (`saga doctor`)."""
    return sync_redis_lib.Redis.from_url(
        settings.redis_url, **_options(settings, decode, timeout_s)
    )


def decoding_twin(redis: Redis) -> Redis:
    """A client to the same server with the same settings that decodes replies to text."""
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": True}
    return Redis(connection_pool=pool.__class__(connection_class=pool.connection_class, **kwargs))


@contextlib.asynccontextmanager
async def connected(settings: Settings, *, decode: bool = False) -> AsyncIterator[Redis]:
    """A client for the block, closed afterwards."""
    r = client(settings, decode=decode)
    try:
        yield r
    finally:
        await r.aclose()
