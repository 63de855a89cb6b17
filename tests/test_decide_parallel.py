"""Parallel stages in the pure saga core: branches start together, each with its own retries
and timeout; the stage ends when all have; a branch that fails for good stops the others and
compensation runs stage by stage (the current stage's branches together, then earlier stages in
reverse); operators act on branches; hostile group definitions are refused in one line."""

from __future__ import annotations

import itertools
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.core.decide import decide
from orchestrator.core.definition import (
    RetryPolicy,
    SagaDefinition,
    StepDef,
    parallel,
    wait_for,
)
from orchestrator.core.model import Status, StepState, StepStatus
from orchestrator.engine.sagas import check_definition, load_sagas
from orchestrator.errors import ConfigError
from tests.support.decide_walk import (
    FLOW,
    Flow,
    comp_fail,
    comp_ok,
    crty,
    due,
    fail,
    moves,
    ok,
    op,
    rty,
    signal,
    tmo,
)

ONE = RetryPolicy(max_attempts=1)
TRIP = SagaDefinition(
    "trip",
    1,
    (
        StepDef("reserve", "trips", "Reserve", "Release"),
        *parallel(
            "book",
            StepDef("flight", "airline", "BookFlight", "CancelFlight"),
            StepDef("hotel", "hotels", "BookRoom", "CancelRoom"),
            StepDef("car", "cars", "RentCar", "ReturnCar", retry=ONE),
        ),
        StepDef("pay", "payment", "Charge", "Refund"),
    ),
)
BRANCHES = ("flight", "hotel", "car")
#: two parallel stages in a row, then a single step
TWO = SagaDefinition(
    "two",
    1,
    (
        *parallel("a", StepDef("a1", "p", "DoA1", "UndoA1"), StepDef("a2", "p", "DoA2", "UndoA2")),
        *parallel("b", StepDef("b1", "p", "DoB1", "UndoB1"), StepDef("b2", "p", "DoB2", "UndoB2")),
        StepDef("c", "p", "DoC", "UndoC"),
    ),
)
st = StepStatus


def booking() -> Flow:
    """The trip with its reservation done: the three bookings are running."""
    return Flow(d=TRIP).begin().run(ok("reserve"))


# ---- forward -----------------------------------------------------------------------------------


def test_the_definition_has_one_stage_per_group_run() -> None:
    """Steps stay flat; the stages are reserve, the three bookings, pay."""
    assert [s.name for s in TRIP.steps] == ["reserve", *BRANCHES, "pay"]
    assert [list(s) for s in TRIP.stages] == [[0], [1, 2, 3], [4]]
    assert [TRIP.stage_of(i) for i in range(5)] == [0, 1, 1, 1, 2]
    assert {s.group for s in TRIP.steps} == {"", "book"}


def test_a_stage_starts_its_branches_together() -> None:
    """One decision sends every branch's command (attempt 1) and sets each one's timeout."""
    w = Flow(d=TRIP).begin()
    t = w.send(ok("reserve"))
    assert moves(t) == [(b, 1, False) for b in BRANCHES]
    assert [x.member for x in t.timers] == [tmo(b, 1) for b in BRANCHES]
    assert w.s.status == Status.PENDING and w.s.current_step == 1
    assert [w.step(b) for b in BRANCHES] == [st.RUNNING] * 3


@pytest.mark.parametrize("order", list(itertools.permutations(BRANCHES)), ids="-".join)
def test_the_stage_ends_when_every_branch_completed_in_any_order(order: tuple[str, ...]) -> None:
    """Until the last branch completes nothing new is sent; then pay runs; then completed."""
    w = booking()
    for b in order[:-1]:
        t = w.send(ok(b))
        assert t.outcome == "applied" and moves(t) == [] and w.s.current_step == 1
        assert w.step(b) == st.COMPLETED
    t = w.send(ok(order[-1]))
    assert moves(t) == [("pay", 1, False)] and w.s.current_step == 4
    w.run(ok("pay"))
    assert w.s.status == Status.COMPLETED
    assert all(s == st.COMPLETED for s in w.statuses().values())
    assert not [m for m in w.commands() if m[3]]


def test_a_parallel_first_stage_keeps_the_saga_started() -> None:
    """While the first stage runs the saga is started, whichever branch replies first."""
    w = Flow(d=TWO).begin()
    assert moves(w.log[-1]) == [("a1", 1, False), ("a2", 1, False)]
    w.run(ok("a2"))
    assert w.s.status == Status.STARTED
    w.run(ok("a1"))
    assert w.s.status == Status.PENDING and w.s.current_step == 2


def test_replies_of_a_stage_not_started_are_stray() -> None:
    """A completion for a branch whose command was never sent is stray, not a completion."""
    w = Flow(d=TRIP).begin()
    t = w.send(ok("hotel"))
    assert t.outcome == "ignored" and t.stray and w.step("hotel") == st.PENDING


# ---- each branch's own retries and timeout -----------------------------------------------------


def test_each_branch_retries_on_its_own() -> None:
    """A retryable failure puts only that branch in retry_wait, with its own timer; the other
    branches go on; its retry runs attempt 2 of that branch only."""
    w = booking()
    t = w.send(fail("flight", 1, retryable=True))
    assert [x.member for x in t.timers] == [rty("flight", 2)] and moves(t) == []
    assert w.step("flight") == st.RETRY_WAIT and w.step("hotel") == st.RUNNING
    w.run(ok("hotel"), ok("car"))
    t = w.send(due("retry", "flight", 2))
    assert moves(t) == [("flight", 2, False)]
    t = w.send(due("timeout", "flight", 2))  # its own timeout: a third attempt is due
    assert w.step("flight") == st.RETRY_WAIT and w.state_of("flight").may_have_run
    w.run(due("retry", "flight", 3), ok("flight", 3))
    assert moves(w.log[-1]) == [("pay", 1, False)]
    assert [w.state_of(b).attempts for b in BRANCHES] == [3, 1, 1]


def test_a_branch_out_of_retries_fails_the_stage() -> None:
    """flight has three attempts: the third retryable failure compensates the stage."""
    w = booking().run(ok("hotel"))
    for a in (1, 2):
        w.run(fail("flight", a, retryable=True), due("retry", "flight", a + 1))
    t = w.send(fail("flight", 3, retryable=True))
    assert w.s.status == Status.COMPENSATING and w.step("flight") == st.FAILED
    # hotel completed, car is still running (it may act): both are undone together
    assert moves(t) == [("hotel", 1, True), ("car", 1, True)]


# ---- a failing branch: compensation order -------------------------------------------------------


def test_a_failed_branch_compensates_its_stage_together_then_the_earlier_steps() -> None:
    """flight completed, hotel still running, car fails for good: one decision undoes flight
    and hotel (it may have acted), car is not undone (it said it failed); when both are undone,
    reserve is; then the saga has failed. Each decision's commands, exactly."""
    w = booking().run(ok("flight"))
    t = w.send(fail("car"))
    assert moves(t) == [("flight", 1, True), ("hotel", 1, True)]
    assert set(t.cancel_timers) >= {tmo("car", 1), tmo("hotel", 1)}
    assert w.s.status == Status.COMPENSATING and w.s.last_error == "car: boom"
    assert w.step("car") == st.FAILED and not w.state_of("car").may_have_run
    assert w.step("hotel") == st.COMPENSATING and w.state_of("hotel").may_have_run
    assert w.state_of("hotel").error == "car failed"
    t = w.send(comp_ok("hotel"))
    assert moves(t) == [] and w.s.status == Status.COMPENSATING  # flight's is still in flight
    t = w.send(comp_ok("flight"))
    assert moves(t) == [("reserve", 1, True)]
    t = w.send(comp_ok("reserve"))
    assert moves(t) == [] and w.s.status == Status.FAILED
    assert w.statuses() == {
        "reserve": st.COMPENSATED,
        "flight": st.COMPENSATED,
        "hotel": st.COMPENSATED,
        "car": st.FAILED,
        "pay": st.PENDING,
    }


def test_earlier_parallel_stages_are_undone_together_in_reverse() -> None:
    """c fails: b1 and b2 are undone together; when both are, a1 and a2 together."""
    w = Flow(d=TWO).begin().run(ok("a1"), ok("a2"), ok("b2"), ok("b1"))
    t = w.send(fail("c"))
    assert moves(t) == [("b1", 1, True), ("b2", 1, True)]
    t = w.send(comp_ok("b2"))
    assert moves(t) == []
    t = w.send(comp_ok("b1"))
    assert moves(t) == [("a1", 1, True), ("a2", 1, True)]
    w.run(comp_ok("a1"))
    assert w.s.status == Status.COMPENSATING
    w.run(comp_ok("a2"))
    assert w.s.status == Status.FAILED


def test_a_branch_that_times_out_while_the_others_completed() -> None:
    """car (no retries) times out after flight and hotel completed: all three are undone at
    once, car because it may have acted; then reserve."""
    w = booking().run(ok("flight"), ok("hotel"))
    t = w.send(due("timeout", "car", 1))
    assert moves(t) == [("flight", 1, True), ("hotel", 1, True), ("car", 1, True)]
    assert w.step("car") == st.COMPENSATING and w.state_of("car").may_have_run
    assert w.s.last_error == "car: timed out after 30s"
    w.run(comp_ok("car"), comp_ok("flight"))
    t = w.send(comp_ok("hotel"))
    assert moves(t) == [("reserve", 1, True)]


def test_a_branch_waiting_for_its_retry_is_not_undone_when_it_never_ran() -> None:
    """A branch whose last attempt failed (it said so) stops without a compensation; its retry
    timer is cancelled."""
    w = booking().run(fail("flight", 1, retryable=True), ok("hotel"))
    t = w.send(fail("car"))
    assert moves(t) == [("hotel", 1, True)]
    assert rty("flight", 2) in t.cancel_timers
    assert w.step("flight") == st.FAILED and not w.state_of("flight").may_have_run


def test_late_completion_of_a_branch_after_compensation_began() -> None:
    """hotel was running when car failed: its compensation went out at once. Its completion
    arriving later (before or after that compensation finished) is recorded, nothing is sent
    again, and no forward command follows."""
    w = booking().run(ok("flight"), fail("car"))
    t = w.send(ok("hotel"))
    assert t.outcome == "applied" and moves(t) == []
    assert "compensation already issued" in t.note
    assert w.state_of("hotel").result == {"ref": "hotel-1"}
    w.run(comp_ok("hotel"), comp_ok("flight"), comp_ok("reserve"))
    assert w.s.status == Status.FAILED
    assert [m for m in w.commands() if not m[3]] == [
        ("Reserve", "reserve", 1, False),
        ("BookFlight", "flight", 1, False),
        ("BookRoom", "hotel", 1, False),
        ("RentCar", "car", 1, False),
    ]


def test_late_completion_after_the_saga_failed_is_compensated() -> None:
    """A branch that had failed retryably, stopped, then answers 'completed' for that attempt
    after the saga failed: it ran after all, so it is compensated (and the saga fails again)."""
    w = booking().run(fail("flight", 1, retryable=True), fail("car"))
    w.run(comp_ok("hotel"), comp_ok("reserve"))
    assert w.s.status == Status.FAILED
    t = w.send(ok("flight", 1))
    assert moves(t) == [("flight", 1, True)] and w.s.status == Status.COMPENSATING
    w.run(comp_ok("flight"))
    assert w.s.status == Status.FAILED


# ---- compensation failures and operators --------------------------------------------------------


def test_a_branch_compensation_that_gives_up_holds_the_saga_for_a_person() -> None:
    """flight's compensation fails for good while hotel's is in flight: the saga needs a
    person; hotel's success does not move on to reserve; resume re-sends flight's; then reserve."""
    w = booking().run(ok("flight"), ok("hotel"), fail("car"))
    t = w.send(comp_fail("flight"))
    assert w.s.status == Status.NEEDS_INTERVENTION and moves(t) == []
    t = w.send(comp_ok("hotel"))
    assert w.s.status == Status.NEEDS_INTERVENTION and moves(t) == []
    t = w.send(op("resume"))
    assert moves(t) == [("flight", 2, True)] and w.s.status == Status.COMPENSATING
    t = w.send(comp_ok("flight", 2))
    assert moves(t) == [("reserve", 1, True)]


def test_resume_resends_every_stuck_branch_compensation() -> None:
    """Two branches' compensations given up / in flight: resume sends both again, together."""
    w = booking().run(ok("flight"), ok("hotel"), fail("car"))
    w.run(comp_fail("flight"), comp_fail("hotel"))
    t = w.send(op("resume"))
    assert moves(t) == [("flight", 2, True), ("hotel", 2, True)]
    assert w.s.status == Status.COMPENSATING  # none has given up any more


def test_resume_with_one_compensation_given_up_and_one_due_again() -> None:
    """flight's compensation waits for its retry, hotel's gave up: resume sends both now, and
    only then is the saga compensating again; the retry timer that was due is cancelled."""
    w = booking().run(ok("flight"), ok("hotel"), fail("car"))
    w.run(comp_fail("flight", retryable=True), comp_fail("hotel"))
    assert w.step("flight") == st.COMPENSATION_WAIT and w.s.status == Status.NEEDS_INTERVENTION
    t = w.send(op("resume"))
    assert moves(t) == [("flight", 2, True), ("hotel", 2, True)]
    assert w.s.status == Status.COMPENSATING
    assert crty("flight", 2) in t.cancel_timers


def test_a_branch_compensation_retry_keeps_the_saga_with_a_person() -> None:
    """Found by hypothesis (FLOW, amount 5000, vip): b1 times out, so b1 and b2 are undone
    together; b2's compensation gives up, b1's times out. b1's compensation retry still goes
    out, but the saga stays needs_intervention (it used to fall back to compensating, with b2
    given up and no timer left); b1 compensated does not go on to a; resume re-sends b2's."""
    w = Flow(d=FLOW).begin({"amount": 5000, "vip": True})
    assert moves(w.send(ok("a"))) == [("b1", 1, False), ("b2", 1, False)]
    assert w.step("bw") == st.WAITING and w.step("ok") == st.PENDING
    t = w.send(due("timeout", "b1", 1))
    assert moves(t) == [("b1", 1, True), ("b2", 1, True)] and w.step("bw") == st.FAILED
    t = w.send(comp_fail("b2"))
    assert w.s.status == Status.NEEDS_INTERVENTION and moves(t) == []
    t = w.send(due("timeout", "b1", 1, compensation=True))
    assert w.step("b1") == st.COMPENSATION_WAIT and w.s.status == Status.NEEDS_INTERVENTION
    t = w.send(due("retry", "b1", 2, compensation=True))
    assert moves(t) == [("b1", 2, True)]
    assert w.s.status == Status.NEEDS_INTERVENTION and w.step("b2") == st.COMPENSATION_FAILED
    t = w.send(comp_ok("b1", 2))
    assert t.outcome == "applied" and moves(t) == [] and w.step("b1") == st.COMPENSATED
    assert w.s.status == Status.NEEDS_INTERVENTION and w.step("a") == st.COMPLETED
    t = w.send(op("resume"))
    assert moves(t) == [("b2", 2, True)] and w.s.status == Status.COMPENSATING
    assert moves(w.send(comp_ok("b2", 2))) == [("a", 1, True)]
    w.run(comp_ok("a"))
    assert w.s.status == Status.FAILED


def test_skip_compensation_of_one_branch_then_the_saga_goes_on() -> None:
    """A person records flight's compensation by hand; hotel's being done, reserve is next."""
    w = booking().run(ok("flight"), ok("hotel"), fail("car"), comp_fail("flight"), comp_ok("hotel"))
    t = w.send(op("skip_compensation", "flight"))
    assert moves(t) == [("reserve", 1, True)]
    assert w.step("flight") == st.COMPENSATION_SKIPPED


def test_abort_while_a_stage_runs_compensates_the_branches_that_may_have_acted() -> None:
    """Abort: flight (completed) and hotel (running) are undone together; car, whose last
    attempt failed and waits for a retry, is stopped and not undone; then reserve."""
    retrying = tuple(replace(s, retry=RetryPolicy()) for s in TRIP.steps)
    d = SagaDefinition("trip", 2, retrying)
    w = Flow(d=d).begin().run(ok("reserve"), ok("flight"), fail("car", 1, retryable=True))
    t = w.send(op("abort"))
    assert moves(t) == [("flight", 1, True), ("hotel", 1, True)]
    assert {tmo("hotel", 1), rty("car", 2)} <= set(t.cancel_timers)
    assert w.step("car") == st.FAILED and w.state_of("hotel").error == "aborted"
    assert w.s.last_error == "aborted by ada"
    w.run(comp_ok("flight"), comp_ok("hotel"))
    assert moves(w.log[-1]) == [("reserve", 1, True)]


def test_abort_compensates_a_branch_that_timed_out_before_its_retry() -> None:
    """A branch waiting for a retry after a timeout may have run: abort undoes it too."""
    w = booking().run(due("timeout", "flight", 1))
    assert w.step("flight") == st.RETRY_WAIT
    t = w.send(op("abort"))
    assert moves(t) == [("flight", 1, True), ("hotel", 1, True), ("car", 1, True)]


def test_retry_by_hand_targets_one_branch_or_every_branch_at_work() -> None:
    """`retry hotel` sends hotel's next attempt only; `retry` alone every running branch's."""
    w = booking().run(ok("flight"))
    t = w.send(op("retry", "hotel"))
    assert moves(t) == [("hotel", 2, False)]
    assert w.state_of("hotel").attempt_floor == 1
    t = w.send(op("retry"))
    assert moves(t) == [("hotel", 3, False), ("car", 2, False)]
    t = w.send(op("retry", "flight"))  # flight completed: nothing to retry
    assert t.outcome == "ignored" and "step is completed" in t.note
    # a step outside the stage names no branch: as before groups, the stage's work is retried
    t = w.send(op("retry", "pay"))
    assert moves(t) == [("hotel", 4, False), ("car", 3, False)]


def test_timers_of_a_branch_of_another_stage_are_ignored() -> None:
    """A timer of a step whose stage is not the current one changes nothing."""
    w = booking()
    assert w.send(due("timeout", "pay", 1)).outcome == "ignored"
    assert w.send(due("timeout", "reserve", 1)).outcome == "ignored"


# ---- hostile group definitions ------------------------------------------------------------------


def step(name: str, group: str = "") -> StepDef:
    return StepDef(name, "p", "Do", "Undo", group=group)


HOSTILE = {
    "group split in two runs": (
        lambda: SagaDefinition("x", 1, (step("a", "g"), step("b"), step("c", "g"))),
        "group 'g' is split in two runs",
    ),
    "group with a space": (lambda: step("a", "my group"), "group 'my group' must be empty or"),
    "group not text": (lambda: step("a", 7), "group 7"),  # type: ignore[arg-type]
    "group starting with a digit": (lambda: step("a", "1g"), "group '1g'"),
    "parallel with a bad name": (lambda: parallel("", step("a")), "parallel(''): a group name"),
    "parallel of nothing": (lambda: parallel("g"), "give one or more StepDef"),
    "parallel of a string": (lambda: parallel("g", "a"), "give one or more StepDef"),  # type: ignore[arg-type]
    "parallel of a grouped step": (
        lambda: parallel("g", step("a", "h")),
        "step 'a' is in group 'h'",
    ),
    "two waits for one signal in a stage": (
        lambda: SagaDefinition(
            "x", 1, parallel("g", wait_for("w1", "go"), wait_for("w2", "go"))
        ),
        "steps 'w1' and 'w2' run together and both wait for signal 'go'",
    ),
    "one signal completes and rejects in a stage": (
        lambda: SagaDefinition(
            "x", 1, parallel("g", wait_for("w1", "go"), wait_for("w2", "ok", reject=("go",)))
        ),
        "signal 'go' completes step 'w1' and rejects step 'w2'",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("build", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_group_definition_is_refused_in_one_line(build: object, message: str) -> None:
    """Each mistake is a ValueError with one line that names it."""
    with pytest.raises(ValueError) as info:
        build()  # type: ignore[operator]
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_one_reject_signal_for_two_waits_in_a_stage_is_allowed() -> None:
    """Two approvals side by side may share 'reject': either one fails the stage."""
    d = SagaDefinition("x", 1, parallel("g", wait_for("w1", "go1"), wait_for("w2", "go2")))
    assert [s.reject_signals for s in d.steps] == [("reject",), ("reject",)]


def test_the_same_group_after_a_gap_is_refused_but_another_group_is_not() -> None:
    """Two different groups back to back are two stages; a plain step between is a stage."""
    d = SagaDefinition("x", 1, (step("a", "g"), step("b", "h"), step("c"), step("e", "i")))
    assert [list(s) for s in d.stages] == [[0], [1], [2], [3]]


def test_check_definition_accepts_groups_and_refuses_a_bad_branch_in_one_line() -> None:
    """The load-time wire check runs over every branch, as over every step."""
    check_definition("my.sagas", TRIP)
    bad = SagaDefinition("trip", 1, parallel("g", step("ok"), step("bad name")))
    with pytest.raises(ConfigError) as info:
        check_definition("my.sagas", bad)
    assert "step 'bad name', field name" in str(info.value) and "\n" not in str(info.value)


def test_a_module_with_a_split_group_stops_loading_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_sagas (the daemon's start-up) turns the definition's ValueError into one
    ConfigError line naming the module and the problem."""
    name = f"split_sagas_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from orchestrator.core.definition import SagaDefinition, StepDef\n"
        "s = lambda n, g='': StepDef(n, 'p', 'Do', 'Undo', group=g)\n"
        "SAGAS = [SagaDefinition('x', 1, (s('a', 'g'), s('b'), s('c', 'g')))]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ConfigError) as info:
        load_sagas([name])
    message = str(info.value)
    assert message.startswith(f"saga module {name!r}") and "\n" not in message
    assert "group 'g' is split in two runs (step 'a', then 'c' after 'b')" in message


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": ()},
        {"steps": (StepState(),) * 6},
        {"current_step": 5},
        {"current_step": -1},
    ],
    ids=["no-steps", "too-many-steps", "current-past-the-end", "current-negative"],
)
def test_a_state_that_does_not_fit_its_definition_is_rejected(bad: dict[str, object]) -> None:
    """decide stays total on a state it never wrote: rejected with the reason, no exception."""
    w = booking()
    state = replace(w.s, **bad)  # type: ignore[arg-type]
    for event in (ok("flight"), op("abort"), due("timeout", "car", 1), signal("approve")):
        t = decide(state, event, w.now, w.registry)
        assert t.outcome == "rejected" and "does not fit saga trip v1" in t.note
