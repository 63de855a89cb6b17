"""Wait steps and signals in the pure saga core: approve, reject, the approval timeout, waits
side by side with actions, duplicate signals, signals the saga does not wait for (refused with
a clear reason), hostile signals and hostile wait-step definitions."""

from __future__ import annotations

import pytest

from orchestrator.core.conditions import Compare
from orchestrator.core.decide import decide
from orchestrator.core.definition import (
    DEFAULT_WAIT_S,
    SagaDefinition,
    StepDef,
    parallel,
    wait_for,
)
from orchestrator.core.model import Reply, Signal, Status, StepStatus, command_id
from orchestrator.engine.sagas import check_definition
from orchestrator.errors import ConfigError
from tests.support.decide_walk import (
    REG,
    SID,
    Flow,
    Walk,
    comp_ok,
    due,
    fail,
    moves,
    ok,
    op,
    signal,
    start,
    tmo,
)

APPROVAL = SagaDefinition(
    "approval",
    1,
    (
        StepDef("reserve", "trips", "Reserve", "Release"),
        wait_for("approval", "approve", reject=("reject", "deny"), timeout_s=600),
        StepDef("pay", "payment", "Charge", "Refund"),
    ),
)
st = StepStatus


def waiting() -> Flow:
    """The reservation is done; the saga waits for approval."""
    return Flow(d=APPROVAL).begin().run(ok("reserve"))


# ---- approve, reject, time out -----------------------------------------------------------------


def test_a_wait_step_sends_nothing_and_sets_its_timeout() -> None:
    """Reaching the wait: no command, the step is waiting, one timer at now + timeout_s."""
    w = Flow(d=APPROVAL).begin()
    t = w.send(ok("reserve"))
    assert moves(t) == [] and w.step("approval") == st.WAITING
    assert [(x.member, x.due_ms) for x in t.timers] == [(tmo("approval", 1), w.now + 600_000)]
    assert w.s.status == Status.PENDING and w.s.current_step == 1
    assert "approval waits for signal 'approve'" in t.note


def test_approve_completes_the_wait_with_the_signal_data_and_goes_on() -> None:
    """The signal's data (as text, like any step result) is the wait's result; pay runs."""
    w = waiting()
    data = {"by": "ada", "limit": 5000, "ok": True, "note": None, "tags": ["a"], "x": {"y": 1.5}}
    t = w.send(signal("approve", data=data))
    assert t.outcome == "applied" and moves(t) == [("pay", 1, False)]
    assert tmo("approval", 1) in t.cancel_timers
    assert w.step("approval") == st.COMPLETED
    assert w.state_of("approval").result == {
        "by": "ada",
        "limit": "5000",
        "ok": "true",
        "note": "null",
        "tags": '["a"]',
        "x": '{"y": 1.5}',
    }
    assert t.note.startswith("signal approve from ada: pending -> pending")
    w.run(ok("pay"))
    assert w.s.status == Status.COMPLETED


@pytest.mark.parametrize("name", ["reject", "deny"])
def test_a_reject_signal_fails_the_wait_and_compensates(name: str) -> None:
    """A reject signal fails the wait at once (no retry) and undoes reserve; the wait itself
    is never compensated; its data says why."""
    w = waiting()
    t = w.send(signal(name, data={"why": "too dear"}, sender="bob"))
    assert moves(t) == [("reserve", 1, True)] and w.s.status == Status.COMPENSATING
    assert w.step("approval") == st.FAILED
    assert w.state_of("approval").error == f"rejected by signal {name!r} from bob"
    assert w.state_of("approval").result == {"why": "too dear"}
    assert w.s.last_error == f"approval: rejected by signal {name!r} from bob"
    assert tmo("approval", 1) in t.cancel_timers
    w.run(comp_ok("reserve"))
    assert w.s.status == Status.FAILED
    assert [m for m in w.commands() if m[3]] == [("Release", "reserve", 1, True)]


def test_a_given_approval_is_never_compensated_when_a_later_step_fails() -> None:
    """pay fails after the approval: reserve is undone, the approval stays completed (a wait
    has nothing to undo) and the saga fails."""
    w = waiting().run(signal("approve"))
    t = w.send(fail("pay"))
    assert moves(t) == [("reserve", 1, True)]
    w.run(comp_ok("reserve"))
    assert w.s.status == Status.FAILED and w.step("approval") == st.COMPLETED
    assert [m for m in w.commands() if m[3]] == [("Release", "reserve", 1, True)]


def test_no_signal_before_the_timeout_fails_the_wait_and_compensates() -> None:
    """The wait's timeout fails it as timed out, with no retry; reserve is undone."""
    w = waiting()
    t = w.send(due("timeout", "approval", 1), dt=600_000)
    assert moves(t) == [("reserve", 1, True)] and t.timers[0].member.endswith("|reserve|1|c")
    assert w.step("approval") == st.TIMED_OUT and not w.state_of("approval").may_have_run
    assert w.s.last_error == "approval: no signal 'approve' within 600s"
    t = w.send(signal("approve", 2))
    assert (
        t.outcome == "ignored"
        and t.note == "signal approve from ada: refused (saga is compensating)"
    )


def test_stale_and_retry_timers_of_a_wait_change_nothing() -> None:
    """Only the wait's own timeout acts: another attempt's, or a retry timer, is ignored."""
    w = waiting()
    for event in (due("timeout", "approval", 2), due("retry", "approval", 2)):
        assert w.send(event).outcome == "ignored"
    assert w.step("approval") == st.WAITING


def test_wait_for_defaults_to_a_day_and_reject() -> None:
    """A person may take a while: the default wait is a day; 'reject' rejects."""
    s = wait_for("ok", "approve")
    assert s.timeout_s == DEFAULT_WAIT_S == 86_400 and s.reject_signals == ("reject",)
    assert s.is_wait and (s.participant, s.action, s.compensation) == ("", "", "")
    assert s.retry.max_attempts == 1


# ---- refused signals ---------------------------------------------------------------------------


def test_a_duplicate_approval_is_refused_with_its_reason() -> None:
    """A second approve (another id) after the wait completed is ignored and says why; the
    very same signal again is ignored too."""
    w = waiting()
    first = signal("approve", 1)
    w.run(first)
    for again in (signal("approve", 2), first, signal("reject", 3)):
        t = w.send(again)
        assert t.outcome == "ignored" and t.state is w.state and not t.commands
        assert "refused (step approval already received 'approve')" in t.note


def test_a_signal_before_the_wait_begins_is_refused() -> None:
    """While reserve runs the wait is pending: the approval is refused, not kept for later."""
    w = Flow(d=APPROVAL).begin()
    t = w.send(signal("approve"))
    assert t.outcome == "ignored"
    assert t.note == "signal approve from ada: refused (step approval is pending, not waiting yet)"
    w.run(ok("reserve"))
    assert w.step("approval") == st.WAITING


def test_a_signal_for_a_finished_saga_is_refused() -> None:
    """A completed (or failed) saga takes no signal."""
    w = waiting().run(signal("approve"), ok("pay"))
    t = w.send(signal("approve", 2))
    assert t.note == "signal approve from ada: refused (saga is completed)"


def test_a_signal_the_wait_does_not_take_is_refused_naming_what_it_takes() -> None:
    """The note names the waiting step and the signals it takes."""
    w = waiting()
    t = w.send(signal("aprove"))
    assert t.outcome == "ignored" and w.step("approval") == st.WAITING
    assert t.note == (
        "signal aprove from ada: refused (step approval waits for 'approve' or 'reject' or "
        "'deny', not 'aprove')"
    )


def test_a_signal_for_a_saga_with_no_wait_is_refused() -> None:
    """The order saga waits for nothing."""
    w = Walk().run(start())
    t = w.send(signal("approve"))
    assert t.outcome == "ignored" and "refused (no step waits for signal 'approve')" in t.note


def test_a_signal_for_an_unknown_saga_is_rejected() -> None:
    """No state, no saga: like any input for an unknown saga (dead-lettered)."""
    t = decide(None, signal("approve"), 0, REG)
    assert t.outcome == "rejected" and t.note == "signal approve from ada for an unknown saga"


HOSTILE_SIGNALS = {
    "empty name": Signal("", "s1", {}),
    "space": Signal("app rove", "s1", {}),
    "newline": Signal("approve\n", "s1", {}),
    "too long": Signal("a" * 65, "s1", {}),
    "not text": Signal(7, "s1", {}),  # type: ignore[arg-type]
    "data not an object": Signal("approve", "s1", ["yes"]),  # type: ignore[arg-type]
    "data is text": Signal("approve", "s1", "yes"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("sig", HOSTILE_SIGNALS.values(), ids=HOSTILE_SIGNALS.keys())
def test_hostile_signals_are_refused_on_one_line(sig: Signal) -> None:
    """A malformed signal never raises and never applies: refused, the note one short line."""
    w = waiting()
    t = w.send(sig)
    assert t.outcome == "ignored" and t.state is w.state and not t.commands
    assert "refused (" in t.note and "\n" not in t.note and len(t.note) < 200, t.note
    assert w.step("approval") == st.WAITING


def test_odd_signal_data_becomes_text_without_raising() -> None:
    """Keys of any kind, NaN, mixed-key objects and absurd nesting: the wait completes and every
    value is text."""
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    data = {1: "one", "nan": float("nan"), "mixed": {1: "a", "b": 2}, "deep": deep, "x": {1, 2}}
    w = waiting()
    w.run(signal("approve", data=data))  # type: ignore[arg-type]
    result = w.state_of("approval").result
    assert result is not None and all(isinstance(v, str) for v in result.values())
    assert result["1"] == "one" and result["nan"] == "float" and result["deep"] == "list"
    assert result["mixed"] == "dict"


def test_a_hostile_sender_is_shown_on_one_line() -> None:
    """The sender goes into notes and errors as a short quoted line, never raw."""
    w = waiting()
    t = w.send(signal("deny", sender="x\ny" * 100))
    assert "\n" not in t.note and "\n" not in w.s.last_error and len(w.s.last_error) < 200


def test_a_reply_to_a_wait_step_is_stray() -> None:
    """A wait sends no command, so a 'completed' for it, even with the id a command would have
    had, is a stray reply and never completes the wait."""
    w = waiting()
    forged = Reply("completed", "approval", 1, command_id=command_id(SID, "approval", False, 1))
    t = w.send(forged)
    assert t.outcome == "ignored" and t.stray and "waits for a signal" in t.note
    assert w.send(fail("approval")).stray


# ---- operators on a wait ------------------------------------------------------------------------


def test_retry_by_hand_does_not_apply_to_a_wait() -> None:
    """There is nothing to send again: retry is ignored and says the step is waiting."""
    t = waiting().send(op("retry"))
    assert t.outcome == "ignored" and "step is waiting" in t.note


def test_abort_during_a_wait_compensates_what_ran_and_never_the_wait() -> None:
    """Abort stops the wait (its timer cancelled) and undoes reserve."""
    w = waiting()
    t = w.send(op("abort"))
    assert moves(t) == [("reserve", 1, True)] and tmo("approval", 1) in t.cancel_timers
    assert w.step("approval") == st.FAILED and w.state_of("approval").error == "aborted"


# ---- waits next to actions in a stage ----------------------------------------------------------

CHECKS = SagaDefinition(
    "checks",
    1,
    (
        StepDef("reserve", "trips", "Reserve", "Release"),
        *parallel(
            "check",
            StepDef("credit", "bank", "CheckCredit", "ReleaseCredit"),
            wait_for("manager", "approve", timeout_s=60),
        ),
        StepDef("pay", "payment", "Charge", "Refund"),
    ),
)


def test_a_wait_in_a_stage_waits_with_the_actions() -> None:
    """The stage sends credit's command and starts the wait; it ends when both are done, in
    either order."""
    w = Flow(d=CHECKS).begin()
    t = w.send(ok("reserve"))
    assert moves(t) == [("credit", 1, False)]
    assert [x.member for x in t.timers] == [tmo("credit", 1), tmo("manager", 1)]
    t = w.send(signal("approve"))
    assert moves(t) == [] and "waiting for credit" in t.note
    t = w.send(ok("credit"))
    assert moves(t) == [("pay", 1, False)]


def test_a_rejection_in_a_stage_undoes_the_branch_that_may_have_acted() -> None:
    """reject while credit runs: credit (in flight) and then reserve are undone; the wait never."""
    w = Flow(d=CHECKS).begin().run(ok("reserve"))
    t = w.send(signal("reject"))
    assert moves(t) == [("credit", 1, True)]
    t = w.send(comp_ok("credit"))
    assert moves(t) == [("reserve", 1, True)]


def test_a_failed_action_in_a_stage_stops_the_wait() -> None:
    """credit fails: the wait stops (timer cancelled, failed) and a later approve is refused."""
    w = Flow(d=CHECKS).begin().run(ok("reserve"))
    t = w.send(fail("credit"))
    assert moves(t) == [("reserve", 1, True)] and tmo("manager", 1) in t.cancel_timers
    assert w.step("manager") == st.FAILED and w.state_of("manager").error == "credit failed"
    assert "refused (saga is compensating)" in w.send(signal("approve")).note


def test_a_skipped_wait_refuses_its_signal_saying_why() -> None:
    """A conditional approval that was skipped refuses the approve with its condition."""
    d = SagaDefinition(
        "cond",
        1,
        (
            StepDef("reserve", "trips", "Reserve", "Release"),
            wait_for("approval", "approve", when=Compare("amount", "gt", 1000)),
            StepDef("pay", "payment", "Charge", "Refund"),
        ),
    )
    w = Flow(d=d).begin({"amount": 200}).run(ok("reserve"))
    assert w.step("approval") == st.SKIPPED
    t = w.send(signal("approve"))
    assert "refused (step approval was skipped: not amount > 1000)" in t.note


# ---- hostile wait definitions -------------------------------------------------------------------

HOSTILE = {
    "wait with a participant": (
        lambda: StepDef("w", "bank", "", "", signal="go"),
        "step 'w' waits for signal 'go', so it sends nothing: participant, action, "
        "compensation and topic must be empty (got participant 'bank')",
    ),
    "wait with an action and compensation": (
        lambda: StepDef("w", "", "Do", "Undo", signal="go"),
        "(got action 'Do', compensation 'Undo')",
    ),
    "signal with a space": (lambda: wait_for("w", "go now"), "signal name 'go now' must be"),
    "signal too long": (lambda: wait_for("w", "g" * 65), "must be 1 to 64 letters"),
    "signal not text": (lambda: wait_for("w", 5), "signal must be a signal name, not 5"),  # type: ignore[arg-type]
    "reject name bad": (lambda: wait_for("w", "go", reject=("no way",)), "signal name 'no way'"),
    "reject given as a string": (
        lambda: wait_for("w", "go", reject="reject"),  # type: ignore[arg-type]
        "reject_signals must be a tuple of signal names, not 'reject'",
    ),
    "reject repeats": (lambda: wait_for("w", "go", reject=("no", "no")), "repeat a name"),
    "signal also rejects": (
        lambda: wait_for("w", "go", reject=("go",)),
        "signal 'go' both completes and rejects the step",
    ),
    "reject without a signal": (lambda: wait_for("w", ""), "reject_signals need a signal"),
    "reject on an action step": (
        lambda: StepDef("a", "p", "Do", "Undo", reject_signals=("no",)),
        "reject_signals need a signal",
    ),
    "wait timeout zero": (lambda: wait_for("w", "go", timeout_s=0), "timeouts must be positive"),
    "when not a condition": (
        lambda: wait_for("w", "go", when=lambda data: True),  # type: ignore[arg-type]
        "when must be a condition (Compare, AllOf, AnyOf or Not), not function",
    ),
}


@pytest.mark.parametrize(("build", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_wait_definition_is_refused_in_one_line(build: object, message: str) -> None:
    """Each mistake is a ValueError with one line that names the step and the problem."""
    with pytest.raises(ValueError) as info:
        build()  # type: ignore[operator]
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_reject_signals_given_as_a_list_are_kept_as_a_tuple() -> None:
    """A list is accepted and frozen, so the definition stays hashable."""
    s = wait_for("w", "go", reject=["no", "stop"])  # type: ignore[arg-type]
    assert s.reject_signals == ("no", "stop") and hash(s)


def test_check_definition_accepts_a_wait_and_checks_its_name_and_timer() -> None:
    """At load, a wait step needs no participant or commands, only a wire name (and a timer
    the wire takes); a bad one is one line naming the step and the field."""
    check_definition("my.sagas", APPROVAL)
    check_definition("my.sagas", CHECKS)
    for name, field in (("ok now", "field name"), ("1st", "field name"), ("w" * 65, "field name")):
        bad = SagaDefinition("x", 1, (wait_for(name, "go"),))
        with pytest.raises(ConfigError) as info:
            check_definition("my.sagas", bad)
        message = str(info.value)
        assert message.startswith("saga module 'my.sagas': saga 'x' version 1, step")
        assert field in message and "\n" not in message, message
