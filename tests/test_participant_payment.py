"""The payment worker against real Kafka and Redis: charges, refunds, declines, the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from participants.samples.order.config import OrderConfig
from participants.samples.order.workers import payment, snapshot
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompensated, StepCompleted, StepFailed
from tests.conftest import BOTH_REDIS

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [BOTH_REDIS, pytest.mark.participant_topics("payment")]


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


def charge(saga: str, amount: str = "12.50", method: str = "card", attempt: int = 1) -> SagaCommand:
    data = order(amount=amount, payment_method=method)
    return command(saga, "payment", "ProcessPayment", "process_payment", attempt=attempt, data=data)


def refund(saga: str, attempt: int = 1) -> SagaCommand:
    return command(
        saga,
        "payment",
        "RefundPayment",
        "process_payment",
        attempt=attempt,
        compensation=True,
        data=order(),
    )


async def test_charge_then_refund_once(settings: Settings, events: TopicReader) -> None:
    """One charge in the ledger, one refund however often the refund is asked for."""
    async with running(settings, payment.build()):
        cmd = charge("p1", "99.90")
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
        assert isinstance(reply, StepCompleted)
        assert reply.result == {"chargeId": "ch-p1", "amount": "99.90"}
        r1, r2 = refund("p1"), refund("p1", attempt=2)
        await produce(settings, [r1, r1, r2])
        replies = await events.replies([r1.message_id, r2.message_id])
    assert all(isinstance(r, StepCompensated) for r in replies.values())
    ledgers = await snapshot(settings)
    assert [(e["type"], e["amount"]) for e in ledgers.payments] == [
        ("charge", "99.90"),
        ("refund", "99.90"),
    ]
    assert ledgers.net_paid() == {"p1": Decimal(0)}
    assert ledgers.charges["p1"]["status"] == "refunded"


async def test_refund_of_a_charge_never_made_is_a_no_op_and_blocks_it(
    settings: Settings, events: TopicReader
) -> None:
    """Refund first: success, nothing in the ledger; the late charge is refused."""
    async with running(settings, payment.build()):
        r, late = refund("p2"), charge("p2")
        await produce(settings, [r])
        assert isinstance(await events.reply(r.message_id), StepCompensated)
        await produce(settings, [late])
        reply = await events.reply(late.message_id)
    assert isinstance(reply, StepFailed) and not reply.retryable
    ledgers = await snapshot(settings)
    assert ledgers.payments == [] and ledgers.charges["p2"]["status"] == "void"


async def test_duplicate_charge_charges_once(settings: Settings, events: TopicReader) -> None:
    """The same ProcessPayment twice, and a second attempt: one charge."""
    first, again = charge("p3"), charge("p3", attempt=2)
    async with running(settings, payment.build()):
        await produce(settings, [first, first, again])
        replies = await events.replies([first.message_id, again.message_id])
        await events.until(lambda _: len(events.replies_to(first.message_id)) == 2)
    assert replies[first.message_id].result == replies[again.message_id].result
    assert [e["type"] for e in (await snapshot(settings)).payments] == ["charge"]


@pytest.mark.parametrize(
    ("amount", "method", "reason"),
    [("10000.01", "card", "exceeds the limit"), ("5.00", "card-declined", "card-declined")],
)
async def test_declines_are_non_retryable(
    settings: Settings, events: TopicReader, amount: str, method: str, reason: str
) -> None:
    """Above the limit, or the test card: declined for good, nothing charged."""
    cmd = charge("p4", amount, method)
    async with running(settings, payment.build(OrderConfig(payment_limit=Decimal("10000")))):
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepFailed) and not reply.retryable and reason in reply.reason
    assert (await snapshot(settings)).payments == []


async def test_limit_is_configurable(settings: Settings, events: TopicReader) -> None:
    """A lower limit declines what the default accepts."""
    cmd = charge("p5", "50.00")
    async with running(settings, payment.build(OrderConfig(payment_limit=Decimal("20")))):
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepFailed) and "limit of 20" in reply.reason


async def test_limit_and_test_card_come_from_the_environment(
    settings: Settings, events: TopicReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built without a config (as `saga participant run payment` does), the worker reads
    SAGA_PAYMENT_LIMIT and SAGA_PAYMENT_DECLINED_METHOD."""
    monkeypatch.setenv("SAGA_PAYMENT_LIMIT", "30")
    monkeypatch.setenv("SAGA_PAYMENT_DECLINED_METHOD", "gift-card")
    over, gift = charge("p7", "40.00"), charge("p8", "5.00", "gift-card")
    async with running(settings, payment.build()):
        await produce(settings, [over, gift])
        replies = await events.replies([over.message_id, gift.message_id])
    assert "limit of 30" in replies[over.message_id].reason
    assert "'gift-card' was refused" in replies[gift.message_id].reason


async def test_invalid_amount_is_non_retryable(settings: Settings, events: TopicReader) -> None:
    """An amount that is not a number cannot be charged, ever."""
    data = order()
    data["amount"] = "twelve"
    cmd = command("p6", "payment", "ProcessPayment", "process_payment", data=data)
    async with running(settings, payment.build()):
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert (
        isinstance(reply, StepFailed) and not reply.retryable and "invalid amount" in reply.reason
    )
