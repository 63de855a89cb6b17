"""Replay of recorded histories under a (new) definition: a history replays clean under the
definition that made it, and each kind of incompatible change is reported at the first input
it decides differently, with what was recorded and what came out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.conditions import Compare
from orchestrator.core.decide import decide
from orchestrator.core.definition import RetryPolicy, SagaDefinition, StepDef, parallel, wait_for
from orchestrator.core.model import Event, SagaState, Start
from orchestrator.core.replay import Divergence, Outcome, Recorded, replay
from tests.support.decide_walk import (
    SID,
    T0,
    comp_ok,
    due,
    fail,
    ok,
    op,
    signal,
)

V1 = SagaDefinition(
    "trip",
    1,
    (
        StepDef("reserve", "trips", "Reserve", "Release"),
        *parallel(
            "book",
            StepDef("flight", "airline", "BookFlight", "CancelFlight"),
            StepDef("hotel", "hotels", "BookRoom", "CancelRoom"),
        ),
        wait_for("approval", "approve", timeout_s=600, when=Compare("amount", "gt", 1000)),
        StepDef("pay", "payment", "Charge", "Refund"),
    ),
)
BIG = {"amount": 5000}


def record(d: SagaDefinition, data: dict[str, object], *events: Event) -> list[Recorded]:
    """Decide a start and the events under `d`, recording each as a history would."""
    names = [s.name for s in d.steps]
    state: SagaState | None = None
    out = []
    for n, e in enumerate((Start(SID, d.name, dict(data)), *events)):
        now = T0 + 1000 * n
        t = decide(state, e, now, {d.name: d})
        if t.outcome == "applied":
            state = t.state
        out.append(Recorded(e, now, Outcome.of(t, names)))
    return out


HAPPY = (ok("reserve"), ok("hotel"), ok("flight"), signal("approve"), ok("pay"))
FAILED = (
    ok("reserve"),
    ok("flight"),
    fail("hotel", 1, retryable=True),
    due("retry", "hotel", 2),
    fail("hotel", 2),
    comp_ok("flight"),
    comp_ok("reserve"),
)
#: duplicates, early and refused signals, an operator retry, a rejection, stray replies
NOISY = (
    ok("reserve"),
    ok("reserve"),
    signal("approve"),
    ok("flight"),
    op("retry", "hotel"),
    ok("hotel", 2),
    signal("approve", 2),
    signal("approve", 3),
    signal("reject", 4),
    ok("pay"),
    comp_ok("reserve"),
)


@pytest.mark.parametrize("events", [HAPPY, FAILED, NOISY], ids=["happy", "failed", "noisy"])
def test_a_history_replays_clean_under_its_own_definition(events: tuple[Event, ...]) -> None:
    """Same definition, same inputs, same times: no divergence, ignored inputs included."""
    history = record(V1, BIG, *events)
    outcomes = {r.expected.outcome for r in history}
    assert outcomes == ({"applied", "ignored"} if events is NOISY else {"applied"})
    assert replay(V1, history) is None


def test_a_compatible_new_version_replays_clean() -> None:
    """A new version that changes nothing the history went through (a longer timeout of a
    step, a new version number) replays clean."""
    v2 = SagaDefinition(
        "trip", 2, tuple(replace(s, timeout_s=99) if s.name == "pay" else s for s in V1.steps)
    )
    assert replay(v2, record(V1, BIG, *HAPPY)) is None
    assert replay(v2, record(V1, BIG, *FAILED)) is None


def test_nothing_to_replay_is_no_divergence() -> None:
    """An empty history fits every definition."""
    assert replay(V1, []) is None


def check(d: Divergence | None, index: int, reason: str) -> Divergence:
    assert d is not None, "expected a divergence"
    assert d.index == index and reason in d.reason, d.describe()
    assert "\n" not in d.describe() and d.describe().startswith(f"input {index} (")
    return d


def test_a_step_added_at_the_end_diverges_where_the_saga_completed() -> None:
    """The recorded saga completed after pay; the new version still has a step to run."""
    v2 = SagaDefinition("trip", 2, (*V1.steps, StepDef("notify", "mail", "Send", "Unsend")))
    d = check(replay(v2, record(V1, BIG, *HAPPY)), 0, "step notify is pending, recorded absent")
    assert d.expected.status == "started" and d.got.steps["notify"] == "pending"


def test_a_step_added_at_the_end_with_its_state_key_aside_diverges_at_completion() -> None:
    """Compared on the steps both sides know, the first real difference is the status after
    pay: completed then, pending now."""
    v2 = SagaDefinition("trip", 2, (*V1.steps, StepDef("notify", "mail", "Send", "Unsend")))
    history = [
        replace(r, expected=replace(r.expected, steps={**r.expected.steps, "notify": "pending"}))
        for r in record(V1, BIG, *HAPPY)
    ]
    d = check(replay(v2, history), 5, "saga status pending, recorded completed")
    assert isinstance(d.event, type(ok("pay"))) and d.event.step == "pay"
    assert "recorded applied, saga completed" in d.describe()


def test_a_renamed_step_diverges_at_its_first_input() -> None:
    """hotel renamed to stay: a reply for hotel names a step the new version lacks."""
    v2 = SagaDefinition(
        "trip", 2, tuple(replace(s, name="stay") if s.name == "hotel" else s for s in V1.steps)
    )
    d = check(replay(v2, record(V1, BIG, *HAPPY)), 0, "step hotel is absent, recorded pending")
    assert d.got.steps["stay"] == "pending"


def test_a_changed_condition_diverges_where_the_approval_waited() -> None:
    """Approval only above 10000: the 5000 trip no longer waits, so after the bookings pay
    runs instead of the approval waiting."""
    v2 = SagaDefinition(
        "trip",
        2,
        tuple(
            replace(s, when=Compare("amount", "gt", 10_000)) if s.name == "approval" else s
            for s in V1.steps
        ),
    )
    d = check(replay(v2, record(V1, BIG, *HAPPY)), 3, "step approval is skipped, recorded waiting")
    assert d.got.status == d.expected.status == "pending"
    assert d.describe().startswith(
        "input 3 (completed flight#1): step approval is skipped, recorded waiting; recorded "
        "applied, saga pending [reserve=completed, flight=completed, hotel=completed, "
        "approval=waiting, pay=pending], replayed applied, saga pending ["
    )


def test_a_split_group_diverges_after_the_reservation() -> None:
    """flight and hotel no longer in parallel: after reserve only flight runs."""
    v2 = SagaDefinition("trip", 2, tuple(replace(s, group="") for s in V1.steps))
    check(replay(v2, record(V1, BIG, *HAPPY)), 1, "step hotel is pending, recorded running")


def test_fewer_retries_diverge_at_the_failure_that_is_now_final() -> None:
    """hotel without retries: its first retryable failure now fails the saga."""
    v2 = SagaDefinition(
        "trip",
        2,
        tuple(
            replace(s, retry=RetryPolicy(max_attempts=1)) if s.name == "hotel" else s
            for s in V1.steps
        ),
    )
    d = check(replay(v2, record(V1, BIG, *FAILED)), 3, "saga status compensating, recorded pending")
    assert d.got.steps["hotel"] == "failed" and d.expected.steps["hotel"] == "retry_wait"
    assert "compensating" in d.note


def test_an_input_ignored_then_but_applied_now_diverges() -> None:
    """Recorded: the approve signal for a small trip was refused (no wait); a version that
    always waits applies it: the outcome differs."""
    always = SagaDefinition(
        "trip", 2, tuple(replace(s, when=None) if s.name == "approval" else s for s in V1.steps)
    )
    small = record(V1, {"amount": 10}, ok("reserve"), ok("flight"), ok("hotel"), signal("approve"))
    assert small[4].expected.outcome == "ignored"
    d = check(replay(always, small), 3, "step approval is waiting, recorded skipped")
    assert d.index == 3


def test_a_start_of_another_saga_type_is_rejected_and_diverges() -> None:
    """A history of another saga type: its start is rejected under this definition."""
    other = SagaDefinition("cruise", 1, (StepDef("board", "ship", "Board", "Leave"),))
    d = check(replay(V1, record(other, {}, ok("board"))), 0, "outcome rejected, recorded applied")
    assert "unknown saga type 'cruise'" in d.note and d.got.status == ""


def test_rejected_inputs_compare_by_outcome_only() -> None:
    """A rejected input left no state; recording none and replaying none agree."""
    history = record(V1, BIG, ok("reserve"), ok("teleport"))
    assert history[2].expected == Outcome("rejected")
    assert replay(V1, history) is None


def test_a_recorded_status_that_differs_is_reported_even_when_outcomes_agree() -> None:
    """A tampered (or corrupted) record: the saga status recorded is not what decide gives."""
    history = record(V1, BIG, *HAPPY)
    history[2] = replace(history[2], expected=replace(history[2].expected, status="completed"))
    check(replay(V1, history), 2, "saga status pending, recorded completed")
