"""What the samples' CLI plug-ins share: one async call with a Redis client built from the
environment's settings (`SAGA_REDIS_URL`, `SAGA_KEY_PREFIX`...)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from infra import redis as redis_factory
from schemas.config import Settings

T = TypeVar("T")


def redis_call(fn: Callable[[Redis, Settings], Awaitable[T]]) -> T:
    """Run `fn(redis, settings)` to completion and close the client."""
    settings = Settings()

    async def go() -> T:
        async with redis_factory.connected(settings, decode=True) as redis:
            return await fn(redis, settings)

    return asyncio.run(go())
