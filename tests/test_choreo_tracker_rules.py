"""The tracker's pure rule (`orchestrator.core.choreography.track`) and the checks on a
choreography's description, without Kafka or Redis."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from orchestrator.core.choreography import Choreography, Observed, Step, Tracked, track
from orchestrator.core.model import SagaState, Status, StepStatus
from orchestrator.engine.statecodec import from_fields, to_fields
from participants.samples.choreo.description import ORDER

NOW = 1_700_000_000_000


def run(events: list[tuple[str, dict[str, Any]]]) -> tuple[SagaState | None, list[Tracked]]:
    """Feed events (type, data) in order, through the hash codec each time as the tracker does
    (so what is decided is what Redis can hold)."""
    state: SagaState | None = None
    start = ""
    out = []
    d = ORDER.definition()
    for n, (event_type, data) in enumerate(events):
        t = track(ORDER, state, start, Observed(event_type, f"e{n}", data), "o-1", NOW + n)
        out.append(t)
        if t.state is not None and t.outcome == "applied":
            state = from_fields(to_fields(t.state, d), d, "o-1")
            start = t.start_input
    return state, out


ORDER_DATA = {"items": [{"productId": "a", "quantity": 1}], "amount": "5.00"}
HAPPY = [
    ("OrderPlaced", ORDER_DATA),
    ("InventoryReserved", {**ORDER_DATA, "reservationId": "r-1"}),
    ("PaymentCompleted", {**ORDER_DATA, "reservationId": "r-1", "chargeId": "c-1"}),
    ("OrderShipped", {**ORDER_DATA, "reservationId": "r-1", "chargeId": "c-1", "trk": "t-1"}),
]
DECLINED = [
    ("OrderPlaced", ORDER_DATA),
    ("InventoryReserved", {**ORDER_DATA, "reservationId": "r-1"}),
    ("PaymentFailed", {**ORDER_DATA, "reservationId": "r-1", "reason": "declined"}),
    ("InventoryReleased", {**ORDER_DATA, "reservationId": "r-1", "released": "1"}),
]


def statuses(state: SagaState | None) -> dict[str, str]:
    assert state is not None
    return {s.name: st.status.value for s, st in zip(ORDER.steps, state.steps, strict=True)}


def test_happy_path_walks_started_pending_completed() -> None:
    """Each step's result is what its event added; the end event completes the saga."""
    state, out = run(HAPPY)
    assert [t.state.status.value for t in out if t.state] == [
        "started",
        "pending",
        "pending",
        "completed",
    ]
    assert state is not None and state.data == ORDER_DATA and state.version == 4
    assert [st.result for st in state.steps] == [
        {"reservationId": "r-1"},
        {"chargeId": "c-1"},
        {"trk": "t-1"},
    ]
    assert out[-1].note == "OrderShipped: ship completed; pending -> completed"


def test_failure_compensates_and_ends_failed() -> None:
    """A failed step makes the saga compensating; the failed end event ends it failed, with the
    failure's reason as the step's error and the saga's last error."""
    state, out = run(DECLINED)
    assert state is not None and state.status == Status.FAILED
    assert statuses(state) == {"reserve": "compensated", "charge": "failed", "ship": "pending"}
    assert state.steps[1].error == "declined" and state.last_error == "charge: declined"
    assert state.steps[0].compensation_attempts == 1
    assert out[2].note == "PaymentFailed: charge failed; pending -> compensating"


def test_a_copy_under_another_id_and_a_second_start_are_ignored() -> None:
    """An event that does not move its step forward is ignored, saying why; so is a second
    start. Nothing changes."""
    state, out = run([*HAPPY[:2], HAPPY[1], HAPPY[0]])
    assert [t.outcome for t in out] == ["applied", "applied", "ignored", "ignored"]
    assert out[2].note == "InventoryReserved: step reserve is already completed (a copy, or late)"
    assert out[3].note == "OrderPlaced: a second start (the saga started with e0)"
    assert state is not None and state.version == 2


def test_events_before_their_start_are_recorded_and_the_late_start_adds_the_data() -> None:
    """Out of order: a step event first creates the tracked saga; the start, arriving later,
    only fills in the data."""
    state, out = run([HAPPY[1], HAPPY[0]])
    assert [t.outcome for t in out] == ["applied", "applied"]
    assert out[1].note == "OrderPlaced: the start, after later events; data recorded"
    assert state is not None and state.status == Status.PENDING and state.data == ORDER_DATA
    assert out[1].start_input == "e1"


def test_the_final_state_does_not_depend_on_the_order_of_events() -> None:
    """Every order of the declined saga's events ends in the same state and step statuses
    (a late event still moves its step forward, never the saga out of a final state)."""
    ends = set()
    for perm in itertools.permutations(DECLINED):
        state, _ = run(list(perm))
        assert state is not None
        ends.add((state.status, tuple(sorted(statuses(state).items()))))
    assert ends == {
        (Status.FAILED, (("charge", "failed"), ("reserve", "compensated"), ("ship", "pending")))
    }


def test_a_final_saga_stays_final_and_its_steps_still_move_forward() -> None:
    """After the end, a conflicting end is recorded on its step without reopening the saga."""
    state, out = run([*HAPPY, ("InventoryReleased", ORDER_DATA)])
    assert state is not None and state.status == Status.COMPLETED
    assert state.steps[0].status == StepStatus.COMPENSATED
    assert out[-1].note == "InventoryReleased: reserve compensated; the saga stays completed"


def test_an_unknown_event_type_is_ignored_with_a_reason() -> None:
    """Unknown types: ignored, and for a saga not tracked yet nothing is created."""
    t = track(ORDER, None, "", Observed("Refunded", "x", {}), "o-9", NOW)
    assert (t.outcome, t.state, t.note) == (
        "ignored",
        None,
        "Refunded: not an event of order_choreography",
    )


def test_a_large_or_odd_result_is_kept_small_and_textual() -> None:
    """A step's result holds text only, at most 16 values of at most 256 characters."""
    data = {f"k{i}": i for i in range(40)} | {"long": "x" * 1000, "obj": {"a": [1]}}
    state, _ = run([("OrderPlaced", {}), ("InventoryReserved", data)])
    assert state is not None
    result = state.steps[0].result
    assert result is not None and len(result) == 16
    assert all(isinstance(v, str) and len(v) <= 256 for v in result.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "has space"}, "the name must match"),
        ({"start": "InventoryReserved"}, "is used twice"),
        ({"completed": ("Nope",)}, "end event 'Nope' is not a step's event"),
        ({"completed": ()}, "completed must be a non-empty tuple"),
        ({"failed": ("OrderShipped",)}, "both completed and failed"),
        ({"failed": "InventoryFailed"}, "failed must be a tuple"),
        ({"steps": (Step("a", "svc", "X"), Step("a", "svc", "Y"))}, "step names repeat"),
        ({"steps": (Step("a", "svc", "X"), Step("b", "svc", "X"))}, "'X' is used twice"),
        ({"steps": (Step("a", "bad svc", "X"),)}, "'bad svc' must match"),
        ({"steps": ("a",)}, "steps must be Step"),
        ({"version": 0}, "the version must be"),
    ],
)
def test_a_malformed_description_is_refused_with_one_line(
    kwargs: dict[str, Any], message: str
) -> None:
    """Each mistake in a description is a ValueError naming it, at import time."""
    base: dict[str, Any] = {
        "name": ORDER.name,
        "start": ORDER.start,
        "steps": ORDER.steps,
        "completed": ORDER.completed,
        "failed": ORDER.failed,
    }
    if "steps" in kwargs:
        base |= {"completed": ("X",), "failed": ()}
    with pytest.raises(ValueError, match=message):
        Choreography(**(base | kwargs))


def test_the_description_gives_the_engine_a_saga_definition() -> None:
    """One step per step, its events as action and compensation: statecodec reads the hash."""
    d = ORDER.definition()
    assert (d.name, d.version) == ("order_choreography", 1)
    assert [(s.name, s.participant, s.action, s.compensation) for s in d.steps] == [
        ("reserve", "choreo-inventory", "InventoryReserved", "InventoryReleased"),
        ("charge", "choreo-payment", "PaymentCompleted", "PaymentRefunded"),
        ("ship", "choreo-shipping", "OrderShipped", ""),
    ]
