"""Which failures of Redis and Kafka can clear by themselves, and so are retried, never
dead-lettered or replied; which Kafka errors can never succeed for one record; and how a
failure is named in logs, `/readyz` and metrics.

A Lua error (a plain `ResponseError`) is deliberately not transient: it is a bug in a script,
not an outage.

Redis replies with an error code first (`OOM command not allowed...`, `READONLY You can't
write...`); redis-py's parser turns the codes it knows into typed errors. It leaves `BUSY` (a
script or function running past `busy-reply-threshold`) a plain `ResponseError`, so this module
adds it to the parser's table once, as `BusyError`: every client of this process then raises the
typed error, and nothing anywhere matches error text.
"""

from __future__ import annotations

import redis.exceptions as rx
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    RecordListTooLargeError,
    UnsupportedForMessageFormatError,
)
from confluent_kafka import KafkaError as RdError
from redis._parsers.base import BaseParser

from infra.rdkafka import KafkaClientError


class BusyError(rx.ResponseError):
    """BUSY: Redis is running a script or function past `busy-reply-threshold`; it answers
    again when the script ends or is killed."""


#: reply codes redis-py leaves untyped; added to its parser's code table (the one place)
_EXTRA_REDIS_CODES: dict[str, type[rx.ResponseError]] = {"BUSY": BusyError}
for _code, _cls in _EXTRA_REDIS_CODES.items():
    BaseParser.EXCEPTION_CLASSES.setdefault(_code, _cls)

#: server away, overloaded, loading, failing over, busy, or out of memory under noeviction
REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,  # LOADING
    rx.ReadOnlyError,  # READONLY: a replica, or a primary demoted by a failover
    rx.OutOfMemoryError,  # OOM under maxmemory-policy noeviction
    rx.TryAgainError,  # TRYAGAIN
    rx.ClusterDownError,  # CLUSTERDOWN
    rx.MasterDownError,  # MASTERDOWN: a replica that lost its primary
    BusyError,  # BUSY
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

#: produce errors that no retry can cure for that record (too large for the topic or the
#: producer, a timestamp or format the topic refuses): the record is the problem, not Kafka
KAFKA_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
)


#: librdkafka's codes (hot path, `infra/rdkafka.py`) for the same three families: an outage or
#: a leader change; one record's own fault; a commit refused because the group moved on
RD_TRANSIENT_CODES = frozenset({
    RdError._TRANSPORT, RdError._ALL_BROKERS_DOWN, RdError._TIMED_OUT, RdError._MSG_TIMED_OUT,
    RdError._RESOLVE, RdError._QUEUE_FULL, RdError._UNKNOWN_TOPIC, RdError._UNKNOWN_PARTITION,
    RdError._ISR_INSUFF, RdError.REQUEST_TIMED_OUT, RdError.NETWORK_EXCEPTION,
    RdError.UNKNOWN_TOPIC_OR_PART, RdError.LEADER_NOT_AVAILABLE,
    RdError.NOT_LEADER_FOR_PARTITION, RdError.NOT_COORDINATOR,
    RdError.COORDINATOR_NOT_AVAILABLE, RdError.NOT_ENOUGH_REPLICAS,
})  # fmt: skip
RD_RECORD_CODES = frozenset({
    RdError.MSG_SIZE_TOO_LARGE, RdError.RECORD_LIST_TOO_LARGE, RdError.INVALID_TIMESTAMP,
    RdError.UNSUPPORTED_FOR_MESSAGE_FORMAT, RdError.INVALID_RECORD,
})  # fmt: skip
RD_REBALANCE_CODES = frozenset({
    RdError.REBALANCE_IN_PROGRESS, RdError.ILLEGAL_GENERATION, RdError.UNKNOWN_MEMBER_ID,
    RdError.FENCED_INSTANCE_ID, RdError._ASSIGNMENT_LOST, RdError._NO_OFFSET, RdError._STATE,
})  # fmt: skip


def is_transient(exc: BaseException) -> bool:
    """True for an error another attempt may not meet (an outage, a leader change)."""
    if isinstance(exc, KafkaClientError):
        return exc.retriable or exc.code in RD_TRANSIENT_CODES
    return isinstance(exc, TRANSIENT) or (isinstance(exc, KafkaError) and exc.retriable)


def is_kafka_error(exc: BaseException) -> bool:
    """Any error of either Kafka client."""
    return isinstance(exc, KafkaError | KafkaClientError)


def is_record_error(exc: BaseException) -> bool:
    """True for a produce error that will recur for this record however often it is sent."""
    if isinstance(exc, KafkaClientError):
        return exc.code in RD_RECORD_CODES
    return isinstance(exc, KAFKA_RECORD_ERRORS)


def is_too_large(exc: BaseException) -> bool:
    """The record is larger than the topic (or the producer) takes."""
    if isinstance(exc, KafkaClientError):
        return exc.code == RdError.MSG_SIZE_TOO_LARGE
    return isinstance(exc, MessageSizeTooLargeError)


def is_commit_refused(exc: BaseException) -> bool:
    """A commit the group no longer takes from this member (a rebalance moved the
    partitions); the next owner re-reads from the last commit."""
    if isinstance(exc, KafkaClientError):
        return exc.code in RD_REBALANCE_CODES
    return isinstance(exc, CommitFailedError | IllegalStateError)


def kind(exc: BaseException) -> tuple[str, str]:
    """(source, kind) of a failure, for a metric's labels: ("redis", "OOM"),
    ("redis", "connection"), ("kafka", "KafkaConnectionError"), ("network", "OSError"),
    ("other", "ConflictError")..."""
    if isinstance(exc, rx.RedisError):
        if isinstance(exc, rx.ConnectionError):
            return "redis", "connection"
        if isinstance(exc, rx.TimeoutError):
            return "redis", "timeout"
        code = getattr(exc, "status_code", None)
        return "redis", code or type(exc).__name__
    if isinstance(exc, KafkaError):
        return "kafka", type(exc).__name__
    if isinstance(exc, KafkaClientError):
        return "kafka", exc.name
    if isinstance(exc, OSError | TimeoutError):
        return "network", type(exc).__name__
    return "other", type(exc).__name__


def error_name(exc: BaseException) -> str:
    """The name a dead letter's error class header and a log line give a failure: a
    librdkafka error's code ("MSG_SIZE_TOO_LARGE"), else the exception's class."""
    return exc.name if isinstance(exc, KafkaClientError) else type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line a person reads in `/readyz`: "redis: OOM command not allowed when used memory
    > 'maxmemory'." (redis-py strips the code from the message; it is put back here)."""
    source, name = kind(exc)
    text = str(exc).strip() or type(exc).__name__
    if source == "redis" and getattr(exc, "status_code", None):
        text = f"{name} {text}"
    elif source != "redis":
        text = f"{type(exc).__name__}: {text}"
    return f"{source}: {text}"[:300]
