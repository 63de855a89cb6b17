"""Producing one message the way the project's own producers do: keyed by saga id, with the
routing headers, acknowledged by all in-sync replicas before the call returns."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaProducer

from infra import kafka as kafka_factory
from schemas import codec
from schemas.codec import Format
from schemas.config import Settings
from schemas.dlq import Headers
from schemas.headers import (
    H_CORRELATION_ID,
    H_MESSAGE_ID,
    H_MESSAGE_TYPE,
    H_SAGA_ID,
    H_TRACEPARENT,
)
from schemas.messages import Envelope


@contextlib.asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    p = kafka_factory.producer(
        settings, request_timeout_ms=int(settings.connect_timeout_s * 1000) + 10_000
    )
    async with kafka_factory.started(p):
        yield p


def message_headers(msg: Envelope) -> Headers:
    headers: Headers = [
        (H_MESSAGE_TYPE, str(getattr(msg, "message_type", type(msg).__name__)).encode()),
        (H_SAGA_ID, msg.saga_id.encode()),
        (H_MESSAGE_ID, msg.message_id.encode()),
    ]
    if msg.correlation_id:
        headers.append((H_CORRELATION_ID, msg.correlation_id.encode()))
    if msg.traceparent:
        headers.append((H_TRACEPARENT, msg.traceparent.encode()))
    return headers


async def send(p: AIOKafkaProducer, topic: str, msg: Envelope, fmt: Format = "json") -> None:
    """Send one message keyed by its saga id and wait for the broker's acknowledgement."""
    await p.send_and_wait(
        topic, codec.encode(msg, fmt), msg.saga_id.encode(), headers=message_headers(msg)
    )
