"""The trip booking saga module: its definition (three parallel bookings, the conditional
approval, the payment), its settings, its load by the orchestrator, and how `decide` walks a
small and a large trip through it (pure: no Kafka, no Redis)."""

from __future__ import annotations

import importlib
from typing import Any, Literal

import pytest

from orchestrator.core.conditions import Compare
from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry, SagaDefinition
from orchestrator.core.model import (
    Event,
    Reply,
    SagaState,
    Signal,
    Start,
    Status,
    StepStatus,
    TimerDue,
    Transition,
    command_id,
)
from orchestrator.engine.sagas import load_sagas
from participants.samples.trip import saga
from participants.samples.trip.config import TripConfig, load_config

MODULE = "participants.samples.trip.saga"
BOOKINGS = ("book_flight", "book_hotel", "book_car")
T0 = 1_700_000_000_000


def test_the_module_declares_trip_booking_v1() -> None:
    """One saga type, started by the generic StartSaga (no start mapper, no HTTP route)."""
    assert saga.SAGAS == [saga.TRIP_BOOKING]
    assert saga.TRIP_BOOKING.name == "trip_booking" and saga.TRIP_BOOKING.version == 1
    assert saga.STARTS == {} and saga.HTTP_ROUTES == []


def test_three_parallel_bookings_then_a_conditional_approval_then_payment() -> None:
    """The stages as the issue describes them, with the default threshold and timeout."""
    steps = saga.TRIP_BOOKING.steps
    assert [s.name for s in steps] == [*BOOKINGS, "approval", "take_payment"]
    assert [(s.participant, s.action, s.compensation) for s in steps[:3]] == [
        ("flight", "BookFlight", "CancelFlight"),
        ("hotel", "BookHotel", "CancelHotel"),
        ("car", "BookCar", "CancelCar"),
    ]
    # one group, consecutive: one parallel stage; the rest are stages of their own
    assert [s.group for s in steps] == ["book", "book", "book", "", ""]
    assert all(s.when is None and not s.signal for s in steps[:3])
    approval = steps[3]
    assert approval.signal == "approve" and approval.reject_signals == ("reject",)
    assert (approval.participant, approval.action, approval.compensation) == ("", "", "")
    assert approval.timeout_s == 24 * 3600
    assert approval.when == Compare("amount", "gt", 1000)
    assert approval.when.describe() == "amount > 1000"
    pay = steps[4]
    assert (pay.participant, pay.action, pay.compensation) == (
        "trip_payment",
        "TakePayment",
        "RefundPayment",
    )
    assert pay.when is None and not pay.signal and pay.group == ""


def test_the_orchestrator_loads_it_beside_the_order_saga() -> None:
    """Both sample modules named in SAGA_SAGA_MODULES load, and pass the wire checks."""
    loaded = load_sagas(["participants.samples.order.saga", MODULE])
    assert set(loaded.registry) == {"order_fulfillment", "trip_booking"}
    assert loaded.registry["trip_booking"] == saga.TRIP_BOOKING


def test_threshold_and_timeout_come_from_settings() -> None:
    """A config given builds the definition with it (a whole threshold stays a whole number)."""
    d = saga.trip_booking(TripConfig(trip_approval_threshold=250.5, trip_approval_timeout_s=90))
    assert d.steps[3].when == Compare("amount", "gt", 250.5) and d.steps[3].timeout_s == 90
    whole = saga.trip_booking(TripConfig(trip_approval_threshold=5000))
    assert whole.steps[3].when is not None
    assert whole.steps[3].when.describe() == "amount > 5000"


def test_the_module_reads_the_environment_when_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """SAGA_TRIP_APPROVAL_THRESHOLD and SAGA_TRIP_APPROVAL_TIMEOUT_S are read at import."""
    monkeypatch.setenv("SAGA_TRIP_APPROVAL_THRESHOLD", "2500")
    monkeypatch.setenv("SAGA_TRIP_APPROVAL_TIMEOUT_S", "600")
    try:
        fresh = importlib.reload(saga)
        assert fresh.TRIP_BOOKING.steps[3].when == Compare("amount", "gt", 2500)
        assert fresh.TRIP_BOOKING.steps[3].timeout_s == 600
    finally:
        monkeypatch.undo()
        importlib.reload(saga)
    assert saga.TRIP_BOOKING.steps[3].when == Compare("amount", "gt", 1000)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SAGA_TRIP_APPROVAL_THRESHOLD", "lots", "SAGA_TRIP_APPROVAL_THRESHOLD: "),
        ("SAGA_TRIP_APPROVAL_THRESHOLD", "-1", "greater than or equal to 0"),
        ("SAGA_TRIP_APPROVAL_THRESHOLD", "inf", "SAGA_TRIP_APPROVAL_THRESHOLD: "),
        ("SAGA_TRIP_APPROVAL_TIMEOUT_S", "0", "SAGA_TRIP_APPROVAL_TIMEOUT_S: "),
        ("SAGA_TRIP_APPROVAL_TIMEOUT_S", "nan", "SAGA_TRIP_APPROVAL_TIMEOUT_S: "),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    """A bad value stops the load with one line naming the variable and the value."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as err:
        load_config()
    text = str(err.value)
    assert "\n" not in text and says in text and name in text and value in text


# ---- walking trips through decide ------------------------------------------------------------


class Trip:
    """One trip fed through `decide`, keeping its state and every command sent."""

    def __init__(self, data: dict[str, Any], definition: SagaDefinition | None = None) -> None:
        self.registry = Registry([definition or saga.TRIP_BOOKING])
        self.state: SagaState | None = None
        self.now = T0
        self.sent: list[tuple[str, bool]] = []
        self.last = self.send(Start("trip-1", "trip_booking", data))

    def send(self, event: Event) -> Transition:
        self.now += 1000
        t = decide(self.state, event, self.now, self.registry)
        self.state = t.state
        self.sent += [(c.step, c.compensation) for c in t.commands]
        self.last = t
        return t

    def ok(self, step: str, compensation: bool = False) -> Transition:
        kind: Literal["completed", "compensated"] = "compensated" if compensation else "completed"
        cid = command_id("trip-1", step, compensation, 1)
        result = {} if compensation else {"bookingId": f"id-{step}"}
        return self.send(Reply(kind, step, 1, compensation, result, command_id=cid))

    def status(self, step: str) -> StepStatus:
        assert self.state is not None
        return self.state.steps[saga.TRIP_BOOKING.index(step) or 0].status

    def saga_status(self) -> Status:
        assert self.state is not None
        return self.state.status

    def book_all(self) -> None:
        for step in BOOKINGS:
            self.ok(step)


def test_the_three_bookings_start_together() -> None:
    """The StartSaga sends BookFlight, BookHotel and BookCar in one decision."""
    trip = Trip({"customerId": "c-1", "amount": 200})
    assert trip.last.outcome == "applied"
    assert {c.command_type for c in trip.last.commands} == {"BookFlight", "BookHotel", "BookCar"}
    assert all(trip.status(s) == StepStatus.RUNNING for s in BOOKINGS)


@pytest.mark.parametrize("amount", [200, 1000, 999.99])
def test_a_trip_up_to_the_threshold_skips_the_approval(amount: float) -> None:
    """Booked, approval skipped, paid, completed: no signal needed."""
    trip = Trip({"customerId": "c-1", "amount": amount})
    trip.ok("book_flight")
    trip.ok("book_hotel")
    assert trip.sent == [(s, False) for s in BOOKINGS]  # nothing more until the car is booked
    trip.ok("book_car")
    assert trip.status("approval") == StepStatus.SKIPPED
    assert trip.sent[-1] == ("take_payment", False)
    trip.ok("take_payment")
    assert trip.saga_status() == Status.COMPLETED


def test_a_trip_above_the_threshold_waits_for_approve() -> None:
    """Booked, then waiting: no payment until the approve signal; then paid and completed."""
    trip = Trip({"customerId": "c-1", "amount": 5000})
    trip.book_all()
    assert trip.status("approval") == StepStatus.WAITING
    assert trip.sent == [(s, False) for s in BOOKINGS]
    trip.send(Signal("approve", "sig-1", {"by": "manager"}))
    assert trip.status("approval") == StepStatus.COMPLETED
    assert trip.sent[-1] == ("take_payment", False)
    trip.ok("take_payment")
    assert trip.saga_status() == Status.COMPLETED


@pytest.mark.parametrize(
    "ending",
    [Signal("reject", "sig-2", {}), TimerDue("timeout", "approval", 1)],
    ids=["reject", "approval-timeout"],
)
def test_a_rejected_or_unanswered_trip_cancels_its_three_bookings_together(
    ending: Event,
) -> None:
    """Reject (or the wait's timeout): nothing is charged, the three bookings are cancelled in
    one decision, and the trip ends failed once they are."""
    trip = Trip({"customerId": "c-1", "amount": 5000})
    trip.book_all()
    trip.send(ending)
    assert trip.saga_status() == Status.COMPENSATING
    assert {(c.command_type, c.compensation) for c in trip.last.commands} == {
        ("CancelFlight", True),
        ("CancelHotel", True),
        ("CancelCar", True),
    }
    for step in BOOKINGS:
        trip.ok(step, compensation=True)
    assert trip.saga_status() == Status.FAILED
    assert ("take_payment", False) not in trip.sent


def test_a_string_amount_does_not_count_as_above_the_threshold() -> None:
    """No coercion: "5000" is not a number, so the condition is false; this is why every trip
    worker refuses a non-number amount before booking (tests/test_trip_bookings.py)."""
    trip = Trip({"customerId": "c-1", "amount": "5000"})
    trip.book_all()
    assert trip.status("approval") == StepStatus.SKIPPED
