"""The shipping and notification workers against real Kafka and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from participants.samples.order.workers import notification, shipping, snapshot
from participants.sdk import run_many
from participants.testing import FAST, TopicReader, command, produce
from schemas.config import Settings
from schemas.messages import StepCompensated, StepCompleted, StepFailed
from tests.conftest import BOTH_REDIS

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [BOTH_REDIS, pytest.mark.participant_topics("shipping", "notification")]


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


async def test_shipment_created_and_cancelled_idempotently(
    settings: Settings, events: TopicReader
) -> None:
    """CreateShipment twice and CancelShipment twice: one shipment, cancelled."""
    create = command("h1", "shipping", "CreateShipment", "create_shipment")
    create2 = command("h1", "shipping", "CreateShipment", "create_shipment", attempt=2)
    cancel = command("h1", "shipping", "CancelShipment", "create_shipment", compensation=True)
    cancel2 = command(
        "h1", "shipping", "CancelShipment", "create_shipment", attempt=2, compensation=True
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_many(settings, [shipping.build()], stop, FAST))
    try:
        await produce(settings, [create, create2])
        r = await events.replies([create.message_id, create2.message_id])
        assert isinstance(r[create.message_id], StepCompleted)
        assert r[create.message_id].result == r[create2.message_id].result
        assert r[create.message_id].result["trackingNumber"] == shipping.tracking_number("h1")
        await produce(settings, [cancel, cancel, cancel2])
        r = await events.replies([cancel.message_id, cancel2.message_id])
        assert all(isinstance(x, StepCompensated) for x in r.values())
    finally:
        stop.set()
        await task
    shipments = (await snapshot(settings)).shipments
    assert shipments == {
        "h1": {
            "trackingNumber": shipping.tracking_number("h1"),
            "orderId": "h1",
            "status": "cancelled",
        }
    }


async def test_cancel_before_create_refuses_the_create(
    settings: Settings, events: TopicReader
) -> None:
    """A shipment cancelled before it was created is never created."""
    cancel = command("h2", "shipping", "CancelShipment", "create_shipment", compensation=True)
    create = command("h2", "shipping", "CreateShipment", "create_shipment")
    stop = asyncio.Event()
    task = asyncio.create_task(run_many(settings, [shipping.build()], stop, FAST))
    try:
        await produce(settings, [cancel, create])
        r = await events.replies([cancel.message_id, create.message_id])
    finally:
        stop.set()
        await task
    assert isinstance(r[create.message_id], StepFailed) and not r[create.message_id].retryable
    assert (await snapshot(settings)).shipments["h2"]["status"] == "cancelled"


async def test_notifications_once_per_saga_each(settings: Settings, events: TopicReader) -> None:
    """Confirmation and cancellation notice, each delivered three times: one of each recorded."""
    confirm = command("n1", "notification", "SendOrderConfirmation", "send_confirmation")
    confirm2 = command(
        "n1", "notification", "SendOrderConfirmation", "send_confirmation", attempt=2
    )
    notice = command(
        "n1", "notification", "SendCancellationNotice", "send_confirmation", compensation=True
    )
    other = command("n2", "notification", "SendOrderConfirmation", "send_confirmation")
    stop = asyncio.Event()
    task = asyncio.create_task(run_many(settings, [notification.build()], stop, FAST))
    try:
        await produce(settings, [confirm, confirm, confirm2, notice, notice, other])
        r = await events.replies(
            [confirm.message_id, confirm2.message_id, notice.message_id, other.message_id]
        )
    finally:
        stop.set()
        await task
    assert r[confirm.message_id].result == {"notificationId": "ntf-n1-OrderConfirmation"}
    outbox = (await snapshot(settings)).notifications
    assert sorted((n["sagaId"], n["type"]) for n in outbox) == [
        ("n1", "CancellationNotice"),
        ("n1", "OrderConfirmation"),
        ("n2", "OrderConfirmation"),
    ]
