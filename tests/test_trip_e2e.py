"""The trip sample end to end: the orchestrator (in-process) running the trip saga module, the
four trip workers, trips started with raw StartSaga JSON on the commands topic as kcat sends
it, and the outcome read back from the saga hashes and the workers' records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from orchestrator.core.definition import Registry
from orchestrator.engine.sagas import SagaModules
from participants.samples.trip import saga as trip_saga
from participants.samples.trip.workers import build_all, snapshot
from participants.sdk import run_many
from participants.testing import FAST
from schemas.config import Settings
from tests.conftest import TRIP_TOPICS
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running

# the workers' command topics exist before they start, as in a deployment
pytestmark = TRIP_TOPICS

BOOKERS = ("flight", "hotel", "car")


def start(sid: str, **data: Any) -> tuple[bytes, bytes]:
    """A StartSaga as a person types it into kcat: JSON, keyed by the saga id."""
    doc = {"sagaId": sid, "command": "StartSaga", "sagaType": "trip_booking", "data": data}
    return sid.encode(), orjson.dumps(doc)


def signal(sid: str, name: str, message_id: str, **data: str) -> tuple[bytes, bytes]:
    """A Signal as any Kafka producer may send it: JSON on the events topic, keyed by saga."""
    doc = {"sagaId": sid, "type": "Signal", "name": name, "messageId": message_id, "data": data}
    return sid.encode(), orjson.dumps(doc)


@pytest.fixture
async def trips(settings: Settings) -> AsyncIterator[None]:
    """The trip saga's orchestrator and its four workers, for the test's duration."""
    stop = asyncio.Event()
    workers = asyncio.create_task(run_many(settings, build_all(), stop, FAST))
    try:
        async with running(settings, SagaModules(registry=Registry(trip_saga.SAGAS))):
            yield
    finally:
        stop.set()
        await asyncio.wait_for(workers, 60)


async def test_small_large_and_failing_trips(
    settings: Settings, reader: SagaReader, trips: None
) -> None:
    """200 completes with the approval skipped and is charged once; 5000 books all three and
    then waits for approval with nothing charged, until an `approve` Signal typed as JSON onto
    the events topic completes it (the copy sent again changes nothing); `reject` cancels all three
    bookings; a hotel in Atlantis fails the trip and cancels the flight and the car; a
    declined payment cancels all three bookings."""
    await produce(
        settings,
        settings.commands_topic,
        [
            start("small", customerId="c-1", amount=200),
            start("large", customerId="c-1", amount=5000),
            start("rejected", customerId="c-1", amount=1500.5),
            start("atlantis", customerId="c-1", amount=300, hotel={"city": "Atlantis"}),
            start("declined", customerId="c-1", amount=300, paymentMethod="card-declined"),
        ],
    )
    states = await reader.wait_final(["small", "atlantis", "declined"], timeout_s=120)
    assert states == {"small": "completed", "atlantis": "failed", "declined": "failed"}

    small = await reader.fields("small")
    assert small["step.approval.status"] == "skipped"
    assert all(small[f"step.book_{b}.status"] == "completed" for b in BOOKERS)

    def waits(sid: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await reader.fields(sid)).get("step.approval.status") == "waiting"

        return check

    await wait_for(waits("large"), 120, "the large trip to wait for its approval", interval_s=0.2)
    large = await reader.fields("large")
    assert large["state"] not in ("completed", "failed", "compensating")
    assert all(large[f"step.book_{b}.status"] == "completed" for b in BOOKERS)
    assert large.get("step.take_payment.status", "pending") == "pending"  # defaults left out

    ledgers = await snapshot(settings)
    assert ledgers.net_paid() == {"small": 200}
    assert set(ledgers.charges) == {"small"}  # the declined trip was never charged
    for b in BOOKERS:
        assert ledgers.bookings[b]["small"]["status"] == "booked"
        assert ledgers.bookings[b]["large"]["status"] == "booked"
        assert ledgers.bookings[b]["declined"]["status"] == "cancelled"
    assert "atlantis" not in ledgers.bookings["hotel"]
    # no live booking is left: cancelled, or (cancelled before it ran) never made
    for b in ("flight", "car"):
        assert ledgers.bookings[b].get("atlantis", {"status": "cancelled"})["status"] == "cancelled"
    assert "no hotel in Atlantis" in (await reader.fields("atlantis"))["last_error"]

    await wait_for(waits("rejected"), 120, "the 1500.50 trip to wait", interval_s=0.2)
    approve = signal("large", "approve", "approve-large", by="manager")
    await produce(
        settings,
        settings.events_topic,
        [approve, approve, signal("rejected", "reject", "reject-1", why="too dear")],
    )
    states = await reader.wait_final(["large", "rejected"], timeout_s=120)
    assert states == {"large": "completed", "rejected": "failed"}
    large = await reader.fields("large")
    assert large["step.approval.status"] == "completed"
    assert orjson.loads(large["step.approval.result"]) == {"by": "manager"}
    ledgers = await snapshot(settings)
    assert ledgers.net_paid() == {"small": 200, "large": 5000}
    assert [e["sagaId"] for e in ledgers.payments].count("large") == 1
    for b in BOOKERS:
        assert ledgers.bookings[b]["rejected"]["status"] == "cancelled"
    assert "rejected" not in ledgers.charges
