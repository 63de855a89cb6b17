"""The trip sample's flight, hotel and car workers against real Kafka and Redis: booking,
cancelling, duplicates, a cancel that overtakes its booking, forced and malformed failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest

from participants.samples.trip.workers import build_all, car, flight, hotel, snapshot
from participants.samples.trip.workers.booking import booking_id
from participants.sdk import run_many
from participants.testing import FAST, TopicReader, command, produce, running
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompensated, StepCompleted, StepFailed

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("flight", "hotel", "car")

BOOKERS = [flight, hotel, car]
STEP = {"flight": "book_flight", "hotel": "book_hotel", "car": "book_car"}


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


def trip(amount: Any = 200, customer: Any = "c-1", **options: Any) -> dict[str, Any]:
    """Trip data as the orchestrator sends it: the StartSaga's data, unchanged."""
    data: dict[str, Any] = {"customerId": customer, "amount": amount}
    data.update(options)
    return data


def book(
    m: ModuleType, saga: str, data: dict[str, Any] | None = None, attempt: int = 1
) -> SagaCommand:
    kind = m.KIND
    return command(
        saga, kind.participant, kind.action, STEP[kind.participant], attempt=attempt,
        data=data if data is not None else trip(),
    )  # fmt: skip


def cancel(m: ModuleType, saga: str, attempt: int = 1) -> SagaCommand:
    kind = m.KIND
    return command(
        saga, kind.participant, kind.compensation, STEP[kind.participant], attempt=attempt,
        compensation=True, data=trip(),
    )  # fmt: skip


@pytest.mark.parametrize("m", BOOKERS, ids=lambda m: m.NAME)
async def test_book_once_then_cancel_once(
    settings: Settings, events: TopicReader, m: ModuleType
) -> None:
    """A booking delivered twice plus a second attempt books once (same result each time); its
    cancel delivered twice plus a second attempt cancels that booking."""
    first, again = book(m, "t1"), book(m, "t1", attempt=2)
    c1, c2 = cancel(m, "t1"), cancel(m, "t1", attempt=2)
    async with running(settings, m.build()):
        await produce(settings, [first, first, again])
        await events.until(lambda _: len(events.replies_to(first.message_id)) == 2)
        r = await events.replies([first.message_id, again.message_id])
        assert isinstance(r[first.message_id], StepCompleted)
        result = r[first.message_id].result
        assert result["bookingId"] == booking_id(m.KIND.id_prefix, "t1")
        assert [x.result for x in events.replies_to(first.message_id)] == [result, result]
        assert r[again.message_id].result == result
        booked = (await snapshot(settings)).bookings[m.NAME]
        assert list(booked) == ["t1"] and booked["t1"]["status"] == "booked"
        await produce(settings, [c1, c1, c2])
        await events.until(lambda _: len(events.replies_to(c1.message_id)) == 2)
        r = await events.replies([c1.message_id, c2.message_id])
    assert all(isinstance(x, StepCompensated) for x in r.values())
    record = (await snapshot(settings)).bookings[m.NAME]["t1"]
    assert record["status"] == "cancelled"
    assert record["bookingId"] == result["bookingId"] and record["customerId"] == "c-1"


async def test_default_and_chosen_options_are_booked(
    settings: Settings, events: TopicReader
) -> None:
    """Without options each worker books its default; given options are booked as asked."""
    chosen = trip(
        5000,
        flight={"from": "CDG", "to": "NRT", "date": "2030-04-01"},
        hotel={"city": "Tokyo", "nights": 5},
        car={"city": "Tokyo", "days": 4, "class": "van"},
    )
    cmds = [book(m, "t-default") for m in BOOKERS] + [book(m, "t-chosen", chosen) for m in BOOKERS]
    stop = asyncio.Event()
    task = asyncio.create_task(run_many(settings, build_all()[:3], stop, FAST))
    try:
        await produce(settings, cmds)
        r = await events.replies([c.message_id for c in cmds])
    finally:
        stop.set()
        await task
    got = {(c.saga_id, c.participant): r[c.message_id].result for c in cmds}
    assert got[("t-default", "flight")] == {
        "bookingId": booking_id("FL", "t-default"), "from": "LHR", "to": "JFK", "date": "any",
    }  # fmt: skip
    assert got[("t-default", "hotel")] == {
        "bookingId": booking_id("HT", "t-default"), "city": "New York", "nights": "2",
    }  # fmt: skip
    assert got[("t-default", "car")] == {
        "bookingId": booking_id("CR", "t-default"), "city": "New York", "days": "2",
        "class": "compact",
    }  # fmt: skip
    assert got[("t-chosen", "flight")]["to"] == "NRT"
    assert got[("t-chosen", "hotel")]["nights"] == "5"
    assert got[("t-chosen", "car")]["class"] == "van"
    ledgers = await snapshot(settings)
    assert ledgers.trip("t-chosen")["hotel"] == {
        "bookingId": booking_id("HT", "t-chosen"), "customerId": "c-1", "status": "booked",
        "city": "Tokyo", "nights": "5",
    }  # fmt: skip


@pytest.mark.parametrize("m", BOOKERS, ids=lambda m: m.NAME)
async def test_cancel_of_a_booking_never_made_is_a_no_op_and_blocks_it(
    settings: Settings, events: TopicReader, m: ModuleType
) -> None:
    """A cancel first: compensated, nothing written; the booking that arrives after it is
    refused for good and never made."""
    c, late = cancel(m, "t2"), book(m, "t2")
    async with running(settings, m.build()):
        await produce(settings, [c])
        assert isinstance(await events.reply(c.message_id), StepCompensated)
        assert (await snapshot(settings)).bookings[m.NAME] == {}
        await produce(settings, [late])
        reply = await events.reply(late.message_id)
    assert isinstance(reply, StepFailed) and not reply.retryable
    assert "compensation of this step already ran" in reply.reason
    assert (await snapshot(settings)).bookings[m.NAME] == {}


@pytest.mark.parametrize(
    ("m", "options", "reason"),
    [
        (flight, {"flight": {"soldOut": True}}, "flight sold out: LHR -> JFK"),
        (hotel, {"hotel": {"city": "Atlantis"}}, "no hotel in Atlantis"),
        (hotel, {"hotel": {"soldOut": True, "city": "Rome"}}, "hotels sold out in Rome"),
        (car, {"car": {"soldOut": True}}, "no compact car left in New York"),
    ],
    ids=["flight-sold-out", "hotel-atlantis", "hotel-sold-out", "car-sold-out"],
)
async def test_forced_failures_are_non_retryable_and_book_nothing(
    settings: Settings, events: TopicReader, m: ModuleType, options: dict[str, Any], reason: str
) -> None:
    """The options a demo uses to make a branch fail: failed for good, nothing booked; the
    compensation the orchestrator may still send is a no-op that replies compensated."""
    cmd, c = book(m, "t3", trip(**options)), cancel(m, "t3")
    async with running(settings, m.build()):
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
        await produce(settings, [c])
        undone = await events.reply(c.message_id)
    assert isinstance(reply, StepFailed) and not reply.retryable and reason in reply.reason
    assert isinstance(undone, StepCompensated)
    assert (await snapshot(settings)).bookings[m.NAME] == {}


#: (the workers that read the field, the trip, what the reason says)
MALFORMED: list[tuple[list[ModuleType], dict[str, Any], str]] = [
    (BOOKERS, trip(amount="5000"), "amount must be a JSON number"),
    (BOOKERS, trip(amount=True), "amount must be a JSON number"),
    (BOOKERS, trip(amount=-1), "amount must be a JSON number"),
    (BOOKERS, trip(amount=10**13), "amount must be a JSON number"),
    (BOOKERS, trip(amount=None), "amount must be a JSON number"),
    (BOOKERS, {"amount": 200}, "needs a customerId"),
    (BOOKERS, trip(customer=""), "needs a customerId"),
    (BOOKERS, trip(customer="x" * 129), "needs a customerId"),
    ([flight], trip(flight="business"), "flight must be a JSON object"),
    ([flight], trip(flight={"form": "LHR"}), "flight: unknown option 'form'"),
    ([flight], trip(flight={"from": ""}), "flight.from must be text"),
    ([flight], trip(flight={"to": "x" * 65}), "flight.to must be text"),
    ([flight], trip(flight={"soldOut": "yes"}), "flight.soldOut must be true or false"),
    ([hotel], trip(hotel={"nights": True}), "hotel.nights must be a whole number"),
    ([hotel], trip(hotel={"nights": 366}), "hotel.nights must be a whole number"),
    ([hotel], trip(hotel=[1, 2]), "hotel must be a JSON object"),
    ([car], trip(car={"days": 2.5}), "car.days must be a whole number"),
    ([car], trip(car={"class": 7}), "car.class must be text"),
]


async def test_malformed_trips_fail_at_booking_with_the_reason(
    settings: Settings, events: TopicReader
) -> None:
    """A malformed trip is refused by the workers that read the bad field, non-retryably, with
    a reason naming it (a string amount too: it would skip the approval); nothing is booked."""
    cmds = [
        (book(m, f"bad{i}", data), reason)
        for i, (readers, data, reason) in enumerate(MALFORMED)
        for m in readers
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(run_many(settings, build_all()[:3], stop, FAST))
    try:
        await produce(settings, [c for c, _ in cmds])
        r = await events.replies([c.message_id for c, _ in cmds], timeout_s=60)
    finally:
        stop.set()
        await task
    for c, reason in cmds:
        reply = r[c.message_id]
        assert isinstance(reply, StepFailed), (c.participant, c.data, reply)
        assert not reply.retryable and reason in reply.reason, (c.participant, reply.reason)
    ledgers = await snapshot(settings)
    assert all(recs == {} for recs in ledgers.bookings.values())
