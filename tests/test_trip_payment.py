"""The trip sample's payment worker (`trip_payment`) against real Kafka and Redis: one charge
per trip, one refund, a refund that overtakes its charge, declines and malformed trips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from participants.samples.trip.workers import payment, snapshot
from participants.testing import TopicReader, command, produce, running
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompensated, StepCompleted, StepFailed

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("trip_payment")


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


def take(saga: str, amount: Any = 200, attempt: int = 1, **extra: Any) -> SagaCommand:
    data = {"customerId": "c-9", "amount": amount, **extra}
    return command(saga, "trip_payment", "TakePayment", "take_payment", attempt=attempt, data=data)


def refund(saga: str, attempt: int = 1) -> SagaCommand:
    return command(
        saga, "trip_payment", "RefundPayment", "take_payment", attempt=attempt,
        compensation=True, data={"customerId": "c-9", "amount": 200},
    )  # fmt: skip


async def test_charge_once_then_refund_once(settings: Settings, events: TopicReader) -> None:
    """TakePayment twice plus a second attempt: one charge; RefundPayment twice plus a second
    attempt: one refund; the trip nets to zero."""
    first, again = take("tp1", 5000), take("tp1", 5000, attempt=2)
    r1, r2 = refund("tp1"), refund("tp1", attempt=2)
    async with running(settings, payment.build()):
        await produce(settings, [first, first, again])
        await events.until(lambda _: len(events.replies_to(first.message_id)) == 2)
        r = await events.replies([first.message_id, again.message_id])
        assert isinstance(r[first.message_id], StepCompleted)
        assert r[first.message_id].result == {"chargeId": "tch-tp1", "amount": "5000.00"}
        assert r[again.message_id].result == r[first.message_id].result
        ledgers = await snapshot(settings)
        assert [(e["type"], e["amount"]) for e in ledgers.payments] == [("charge", "5000.00")]
        assert ledgers.charges["tp1"] == {
            "chargeId": "tch-tp1", "amount": "5000.00", "currency": "USD",
            "customerId": "c-9", "status": "charged",
        }  # fmt: skip
        await produce(settings, [r1, r1, r2])
        await events.until(lambda _: len(events.replies_to(r1.message_id)) == 2)
        r = await events.replies([r1.message_id, r2.message_id])
    assert all(isinstance(x, StepCompensated) for x in r.values())
    ledgers = await snapshot(settings)
    assert [(e["type"], e["amount"]) for e in ledgers.payments] == [
        ("charge", "5000.00"),
        ("refund", "5000.00"),
    ]
    assert ledgers.net_paid() == {"tp1": Decimal(0)}
    assert ledgers.charges["tp1"]["status"] == "refunded"


async def test_refund_of_a_charge_never_made_is_a_no_op_and_blocks_it(
    settings: Settings, events: TopicReader
) -> None:
    """A refund first: compensated, nothing recorded; the late charge is refused for good."""
    r, late = refund("tp2"), take("tp2")
    async with running(settings, payment.build()):
        await produce(settings, [r])
        assert isinstance(await events.reply(r.message_id), StepCompensated)
        await produce(settings, [late])
        reply = await events.reply(late.message_id)
    assert isinstance(reply, StepFailed) and not reply.retryable
    ledgers = await snapshot(settings)
    assert ledgers.payments == [] and ledgers.charges == {}


async def test_amounts_and_currency_are_recorded_as_sent(
    settings: Settings, events: TopicReader
) -> None:
    """A fractional amount keeps its cents; a currency given is kept."""
    a, b = take("tp3", 199.99, currency="EUR"), take("tp4", 0)
    async with running(settings, payment.build()):
        await produce(settings, [a, b])
        r = await events.replies([a.message_id, b.message_id])
    assert r[a.message_id].result == {"chargeId": "tch-tp3", "amount": "199.99"}
    assert r[b.message_id].result == {"chargeId": "tch-tp4", "amount": "0.00"}
    charges = (await snapshot(settings)).charges
    assert charges["tp3"]["currency"] == "EUR" and charges["tp4"]["currency"] == "USD"
    assert (await snapshot(settings)).net_paid() == {
        "tp3": Decimal("199.99"),
        "tp4": Decimal("0.00"),
    }


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (take("d1", paymentMethod="card-declined"), "declined: payment method 'card-declined'"),
        (take("d2", amount="200"), "amount must be a JSON number"),
        (take("d3", amount={"value": 200}), "amount must be a JSON number"),
        (take("d4", currency="usd"), "currency must be three capital letters"),
        (take("d5", currency=None), "currency must be three capital letters"),
        (
            command("d6", "trip_payment", "TakePayment", "take_payment", data={"amount": 1}),
            "needs a customerId",
        ),
    ],
    ids=[
        "declined",
        "string-amount",
        "object-amount",
        "lower-currency",
        "null-currency",
        "no-customer",
    ],
)
async def test_declines_and_malformed_trips_charge_nothing(
    settings: Settings, events: TopicReader, cmd: SagaCommand, reason: str
) -> None:
    """Declined or malformed: failed for good, with the reason, nothing charged."""
    async with running(settings, payment.build()):
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepFailed) and not reply.retryable and reason in reply.reason
    ledgers = await snapshot(settings)
    assert ledgers.payments == [] and ledgers.charges == {}
