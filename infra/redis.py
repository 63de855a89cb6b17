"""Every Redis client the project builds comes from here, configured from `Settings`.

Timeouts are set on every client: connecting waits `connect_timeout_s`; a command waits at least
10 s (a large pipeline on a busy server is slow, not lost).

With `redis_cluster` (SAGA_REDIS_CLUSTER=true) the asyncio client is redis-py's RedisCluster,
started from the node in `redis_url`. It serves the same commands the project sends (every key
of one command or script in one slot: `orchestrator.engine.keys`), so it is typed as `Redis`
for its callers; the few places that differ (pipelined scripts, the decoding twin) ask
`is_cluster`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from typing import Any, cast

import redis as sync_redis_lib
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from schemas.config import Settings


def _options(settings: Settings, decode: bool, timeout_s: float | None) -> dict[str, Any]:
    s = settings
    options: dict[str, Any] = {
        "decode_responses": decode,
        "socket_connect_timeout": s.connect_timeout_s,
        "socket_timeout": timeout_s or max(10.0, s.connect_timeout_s),
    }
    # A user or password in the URL wins over these (redis-py's rule).
    if s.redis_username:
        options["username"] = s.redis_username
    if s.redis_password is not None:
        options["password"] = s.redis_password.get_secret_value()
    if s.redis_tls:  # rediss://: verify the server against the CA, and its name by default
        tls = {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": s.redis_ssl_check_hostname,
            "ssl_ca_certs": s.redis_ssl_cafile,
            "ssl_certfile": s.redis_ssl_certfile,
            "ssl_keyfile": s.redis_ssl_keyfile,
        }
        options |= {k: v for k, v in tls.items() if v is not None}
    return options


def client(settings: Settings, *, decode: bool = False, timeout_s: float | None = None) -> Redis:
    """An asyncio client; `decode=True` returns text instead of bytes (decoded in hiredis)."""
    options = _options(settings, decode, timeout_s)
    if settings.redis_cluster:
        return cast(Redis, RedisCluster.from_url(settings.redis_url, **options))
    return Redis.from_url(settings.redis_url, **options)


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


def sync_client(
    settings: Settings, *, decode: bool = False, timeout_s: float | None = None
) -> sync_redis_lib.Redis:
    """A blocking client, for tools that run outside an event loop (`saga doctor`)."""
    return sync_redis_lib.Redis.from_url(
        settings.redis_url, **_options(settings, decode, timeout_s)
    )


def decoding_twin(redis: Redis) -> Redis:
    """A client to the same server with the same settings that decodes replies to text."""
    if isinstance(redis, RedisCluster):
        allowed = set(inspect.signature(RedisCluster.__init__).parameters)
        kwargs = {
            k: v
            for k, v in redis.connection_kwargs.items()
            if k in allowed and k not in ("host", "port", "startup_nodes")
        }
        nodes = [ClusterNode(n.host, n.port) for n in redis.startup_nodes]
        return cast(Redis, RedisCluster(startup_nodes=nodes, **kwargs | {"decode_responses": True}))
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
