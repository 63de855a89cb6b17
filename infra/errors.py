"""Which failures of Redis and Kafka can clear by themselves, and so are retried, never
dead-lettered or replied.

A Lua error (a plain `ResponseError`) is deliberately not here: it is a bug in a script, not an
outage.
"""

from __future__ import annotations

import redis.exceptions as rx
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError

#: server away, overloaded, loading, failing over, or out of memory under noeviction
REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
    rx.OutOfMemoryError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.NoScriptError,  # a restarted or flushed Redis forgot a script; redis-py reloads it
)
KAFKA_TRANSIENT: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
)
TRANSIENT: tuple[type[BaseException], ...] = (
    *REDIS_TRANSIENT,
    *KAFKA_TRANSIENT,
    OSError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True for an error another attempt may not meet (an outage, a leader change)."""
    return isinstance(exc, TRANSIENT) or (isinstance(exc, KafkaError) and exc.retriable)
