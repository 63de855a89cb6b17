"""Conditional steps in the pure saga core: a step whose condition is false when its stage
begins is skipped (never run, never compensated); a stage of skipped steps is passed in the same
decision; the condition sees the saga data with no coercion, and odd data skips, never raises."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.conditions import AllOf, AnyOf, Compare, Not
from orchestrator.core.definition import SagaDefinition, StepDef, parallel, wait_for
from orchestrator.core.model import Start, Status, StepStatus
from tests.support.decide_walk import SID, Flow, comp_ok, due, fail, moves, ok, signal, tmo

BIG = Compare("amount", "gt", 1000)
GOLD = Compare("customer.tier", "eq", "gold")
TRIP = SagaDefinition(
    "trip",
    1,
    (
        StepDef("reserve", "trips", "Reserve", "Release"),
        *parallel(
            "extras",
            StepDef("insure", "insurer", "Insure", "CancelInsurance", when=BIG),
            StepDef("lounge", "lounges", "BookLounge", "CancelLounge", when=GOLD),
        ),
        wait_for("approval", "approve", timeout_s=600, when=BIG),
        StepDef("pay", "payment", "Charge", "Refund", when=Not(Compare("prepaid", "eq", True))),
    ),
)
st = StepStatus


def trip(data: dict[str, Any]) -> Flow:
    return Flow(d=TRIP).begin(data)


def test_conditions_true_run_every_step() -> None:
    """A big trip of a gold customer: both extras run, the approval waits, pay runs."""
    w = trip({"amount": 5000, "customer": {"tier": "gold"}})
    t = w.send(ok("reserve"))
    assert moves(t) == [("insure", 1, False), ("lounge", 1, False)]
    w.run(ok("insure"))
    t = w.send(ok("lounge"))
    assert moves(t) == [] and w.step("approval") == st.WAITING
    t = w.send(signal("approve"))
    assert moves(t) == [("pay", 1, False)]
    w.run(ok("pay"))
    assert w.s.status == Status.COMPLETED and st.SKIPPED not in w.statuses().values()


def test_a_false_condition_skips_the_step_and_says_why() -> None:
    """A small trip: insure is skipped (no command, no timer), lounge (gold) runs alone."""
    w = trip({"amount": 200, "customer": {"tier": "gold"}})
    t = w.send(ok("reserve"))
    assert moves(t) == [("lounge", 1, False)] and [x.member for x in t.timers] == [tmo("lounge", 1)]
    assert w.step("insure") == st.SKIPPED and w.state_of("insure").attempts == 0
    assert "insure skipped: not amount > 1000" in t.note


def test_skipped_stages_are_passed_in_the_same_decision() -> None:
    """A small trip of a plain customer: the extras stage and the approval are all skipped,
    so reserve's completion sends pay straight away."""
    w = trip({"amount": 200})
    t = w.send(ok("reserve"))
    assert moves(t) == [("pay", 1, False)] and w.s.current_step == 4
    assert [w.step(n) for n in ("insure", "lounge", "approval")] == [st.SKIPPED] * 3
    assert w.s.status == Status.PENDING
    w.run(ok("pay"))
    assert w.s.status == Status.COMPLETED
    assert "all steps completed or skipped" in w.log[-1].note


def test_skipped_steps_at_the_end_complete_the_saga() -> None:
    """A prepaid small trip: after reserve everything is skipped; the saga completes in that
    decision, sending nothing."""
    w = trip({"amount": 200, "prepaid": True})
    t = w.send(ok("reserve"))
    assert moves(t) == [] and w.s.status == Status.COMPLETED
    assert "all steps completed or skipped" in t.note
    assert w.step("pay") == st.SKIPPED


def test_a_saga_whose_every_step_is_skipped_completes_at_start() -> None:
    """Nothing to do at all: the start itself completes the saga."""
    d = SagaDefinition("noop", 1, (StepDef("a", "p", "Do", "Undo", when=BIG),))
    w = Flow(d=d)
    t = w.send(Start(SID, d.name, {"amount": 1}))
    assert t.outcome == "applied" and moves(t) == [] and t.timers == ()
    assert w.s.status == Status.COMPLETED and w.step("a") == st.SKIPPED


def test_a_first_stage_skipped_starts_the_next_at_start() -> None:
    """The first stage's condition is false: the start sends the next stage's command."""
    d = SagaDefinition(
        "x", 1, (StepDef("a", "p", "DoA", "UndoA", when=BIG), StepDef("b", "p", "DoB", "UndoB"))
    )
    w = Flow(d=d)
    t = w.send(Start(SID, d.name, {"amount": 1}))
    assert moves(t) == [("b", 1, False)] and w.s.current_step == 1
    assert w.s.status == Status.PENDING


def test_a_skipped_step_is_never_compensated() -> None:
    """pay fails after insure was skipped: lounge and reserve are undone, insure is not."""
    w = trip({"amount": 200, "customer": {"tier": "gold"}})
    w.run(ok("reserve"), ok("lounge"))
    t = w.send(fail("pay"))
    assert moves(t) == [("lounge", 1, True)]
    t = w.send(comp_ok("lounge"))
    assert moves(t) == [("reserve", 1, True)]
    w.run(comp_ok("reserve"))
    assert w.s.status == Status.FAILED and w.step("insure") == st.SKIPPED
    assert w.step("approval") == st.SKIPPED
    assert not [m for m in w.commands() if m[1] in ("insure", "approval")]


def test_replies_and_timers_for_a_skipped_step_change_nothing() -> None:
    """A skipped step issued nothing: its replies are stray and its timers stale."""
    w = trip({"amount": 200, "customer": {"tier": "gold"}}).run(ok("reserve"))
    assert w.send(ok("insure")).stray
    assert w.send(due("timeout", "insure", 1)).outcome == "ignored"
    assert w.step("insure") == st.SKIPPED


HOSTILE_DATA: dict[str, dict[str, Any]] = {
    "amount as text": {"amount": "5000", "customer": {"tier": "gold"}},
    "amount missing": {"customer": {"tier": "gold"}},
    "amount a boolean": {"amount": True, "customer": {"tier": "gold"}},
    "amount an object": {"amount": {"value": 5000}, "customer": {"tier": "gold"}},
    "amount a list": {"amount": [5000], "customer": {"tier": "gold"}},
    "amount null": {"amount": None, "customer": {"tier": "gold"}},
}


@pytest.mark.parametrize("data", HOSTILE_DATA.values(), ids=HOSTILE_DATA.keys())
def test_odd_data_makes_a_condition_false_and_never_raises(data: dict[str, Any]) -> None:
    """No coercion: an amount that is not a number is not > 1000, so insure and the approval
    are skipped; the gold lounge still runs."""
    w = trip(data)
    t = w.send(ok("reserve"))
    assert moves(t) == [("lounge", 1, False)]
    assert w.step("insure") == st.SKIPPED
    w.run(ok("lounge"))
    assert w.step("approval") == st.SKIPPED and moves(w.log[-1]) == [("pay", 1, False)]


@pytest.mark.parametrize("customer", ["gold", ["gold"], 7, None, {"tier": ["gold"]}, {}])
def test_a_path_through_a_non_object_is_missing(customer: object) -> None:
    """customer.tier through a string, a list, a number or None is missing: lounge skipped."""
    w = trip({"amount": 5000, "customer": customer})
    t = w.send(ok("reserve"))
    assert moves(t) == [("insure", 1, False)] and w.step("lounge") == st.SKIPPED


def test_combined_conditions_decide_a_step() -> None:
    """AllOf / AnyOf in a definition behave as their parts."""
    when = AllOf([BIG, AnyOf([GOLD, Compare("vip", "eq", True)])])
    d = SagaDefinition(
        "x", 1, (StepDef("a", "p", "DoA", "UndoA"), StepDef("b", "p", "DoB", "UndoB", when=when))
    )
    for data, runs in (
        ({"amount": 5000, "vip": True}, True),
        ({"amount": 5000, "customer": {"tier": "gold"}}, True),
        ({"amount": 5000, "vip": "true"}, False),
        ({"amount": 50, "vip": True}, False),
    ):
        w = Flow(d=d).begin(data)
        t = w.send(ok("a"))
        assert (moves(t) == [("b", 1, False)]) is runs, data
        assert (w.step("b") == st.SKIPPED) is not runs
