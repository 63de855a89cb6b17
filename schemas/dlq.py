"""The dead-letter contract: what a record in `saga-dlq` carries besides the original bytes.

A dead-lettered record keeps the original key, value and headers and adds these headers, so that
`saga dlq replay` can put it back exactly where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

H_TOPIC = "dlq-original-topic"
H_PARTITION = "dlq-original-partition"
H_OFFSET = "dlq-original-offset"
H_ERROR_CLASS = "dlq-error-class"
H_ERROR_MESSAGE = "dlq-error-message"
H_TIME = "dlq-time"
H_SOURCE = "dlq-source"
H_REPLAYED = "dlq-replayed"
#: set when the value was too large for the dead-letter topic and only its head was kept
H_TRUNCATED = "dlq-value-truncated-from"
DLQ_HEADERS = (H_TOPIC, H_PARTITION, H_OFFSET, H_ERROR_CLASS, H_ERROR_MESSAGE, H_TIME, H_SOURCE)

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    original: Headers | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    error_class: str,
    error_message: str,
    source: str,
) -> Headers:
    """The original headers (minus stale dead-letter ones) plus the reason headers."""
    kept = [(k, v) for k, v in (original or []) if k not in DLQ_HEADERS]
    return [
        *kept,
        (H_TOPIC, topic.encode()),
        (H_PARTITION, str(partition).encode()),
        (H_OFFSET, str(offset).encode()),
        (H_ERROR_CLASS, error_class.encode()),
        (H_ERROR_MESSAGE, error_message[:1000].encode()),
        (H_TIME, datetime.now(UTC).isoformat().encode()),
        (H_SOURCE, source.encode()),
    ]


class SourceRecord(Protocol):
    """What a dead letter needs of the record it replaces (a consumed record of either Kafka
    client: `infra.rdkafka.Record`, aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def headers_for(record: SourceRecord, error_class: str, error_message: str, source: str) -> Headers:
    """`dead_letter_headers` for a consumed record: where it came from, and why it failed."""
    return dead_letter_headers(
        list(record.headers or ()),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        error_class=error_class,
        error_message=error_message,
        source=source,
    )


def header(headers: Headers | None, name: str) -> str | None:
    """The last value of a header as text, or None."""
    for k, v in reversed(headers or []):
        if k == name:
            return v.decode(errors="replace") if v is not None else None
    return None
