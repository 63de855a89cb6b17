"""Scenario tests of the pure saga core: happy path, failures, retries, timeouts,
compensation, operator actions and rejected inputs, each walked through `decide`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.decide import decide
from orchestrator.core.definition import (
    Registry,
    RetryPolicy,
    SagaDefinition,
    StepDef,
)
from orchestrator.core.model import (
    Event,
    Reply,
    Start,
    Status,
    StepStatus,
    command_id,
)
from tests.support.decide_walk import (
    DATA,
    NAMES,
    REG,
    SD,
    SID,
    T0,
    TYPE,
    C,
    D,
    P,
    R,
    S,
    Walk,
    act,
    backoff_bounds_ms,
    build,
    check_timer_dues,
    cmds,
    comp_fail,
    comp_ok,
    crty,
    due,
    fail,
    ok,
    op,
    result_of,
    rty,
    second_attempt,
    start,
    tmo,
    undo,
)
from tests.test_decide_table import TABLE

# ---- scenarios --------------------------------------------------------------------------------


def test_happy_path_completes_the_four_steps_in_order() -> None:
    """Each completion starts the next step; the last one completes the saga, no compensation."""
    w = Walk()
    t = w.send(start())
    assert t.outcome == "applied" and w.s.status == Status.STARTED and w.s.version == 1
    assert cmds(t) == [act(R, 1)] and [x.member for x in t.timers] == [tmo(R, 1)]
    for i, name in enumerate(NAMES):
        t = w.send(ok(name))
        assert t.outcome == "applied"
        if i + 1 < len(NAMES):
            assert w.s.status == Status.PENDING and w.s.current_step == i + 1
            assert cmds(t) == [act(NAMES[i + 1], 1)]
    assert w.s.status == Status.COMPLETED
    assert w.commands() == [act(n, 1) for n in NAMES]
    assert all(s.status == StepStatus.COMPLETED for s in w.s.steps)
    assert [s.result for s in w.s.steps] == [result_of(n, 1) for n in NAMES]
    assert w.s.version == 5
    assert w.s.created_ms == T0 + 1000 and w.s.updated_ms == w.now


def test_commands_carry_deterministic_ids_participants_and_the_original_result() -> None:
    """Command ids are (saga, step, side, attempt); a compensation carries the step's result."""
    w = Walk().run(start(), ok(R))
    (c,) = w.log[-1].commands
    assert c.command_id == command_id(SID, P, False, 1) == f"{SID}:{P}:action:1"
    assert c.participant == "payment" and c.original_result is None
    (u,) = w.send(fail(P)).commands
    assert u.command_id == f"{SID}:{R}:compensation:1"
    assert u.participant == "inventory" and u.command_type == "ReleaseReservation"
    assert u.original_result == result_of(R, 1)


@pytest.mark.parametrize("failing", range(4), ids=NAMES)
def test_non_retryable_failure_compensates_finished_steps_in_reverse(failing: int) -> None:
    """A final failure at step k undoes steps k-1..0 in that order and ends failed."""
    w = Walk().run(start(), *(ok(n) for n in NAMES[:failing]))
    t = w.send(fail(NAMES[failing]))
    assert t.outcome == "applied"
    assert w.s.last_error == f"{NAMES[failing]}: boom"
    for n in reversed(NAMES[:failing]):
        assert w.s.status == Status.COMPENSATING
        assert w.step(n) == StepStatus.COMPENSATING
        w.run(comp_ok(n))
    assert w.s.status == Status.FAILED
    undone = [c for c in w.commands() if c[3]]
    assert undone == [undo(n, 1) for n in reversed(NAMES[:failing])]
    assert w.step(NAMES[failing]) == StepStatus.FAILED
    assert all(w.step(n) == StepStatus.COMPENSATED for n in NAMES[:failing])
    assert all(w.step(n) == StepStatus.PENDING for n in NAMES[failing + 1 :])


def test_retryable_failure_retries_after_a_jittered_backoff_then_succeeds() -> None:
    """A retryable failure sets a retry timer inside the policy's jitter bounds; it then runs."""
    w = Walk().run(start(), ok(R))
    t = w.send(fail(P, 1, retryable=True))
    assert w.s.status == Status.PENDING and w.step(P) == StepStatus.RETRY_WAIT
    assert t.commands == () and [x.member for x in t.timers] == [rty(P, 2)]
    lo, hi = backoff_bounds_ms(SD[P].retry, 1)  # 0.5 s +- 20 %
    assert w.now + lo <= t.timers[0].due_ms <= w.now + hi
    assert tmo(P, 1) in t.cancel_timers and rty(P, 2) not in t.cancel_timers
    t = w.send(due("retry", P, 2), dt=t.timers[0].due_ms - w.now)
    assert cmds(t) == [act(P, 2)] and [x.member for x in t.timers] == [tmo(P, 2)]
    w.run(ok(P, 2), ok(S), ok(C))
    assert w.s.status == Status.COMPLETED
    assert w.s.steps[1].attempts == 2


def test_backoff_grows_between_retries_and_exhaustion_compensates() -> None:
    """Each retry waits longer (within jitter); after max_attempts the saga compensates."""
    w = Walk().run(start(), ok(R))
    delays = []
    for attempt in (1, 2):
        t = w.send(fail(P, attempt, retryable=True))
        delays.append(t.timers[0].due_ms - w.now)
        lo, hi = backoff_bounds_ms(SD[P].retry, attempt)
        assert lo <= delays[-1] <= hi
        w.run(due("retry", P, attempt + 1))
    t = w.send(fail(P, 3, retryable=True))
    assert w.s.status == Status.COMPENSATING and w.step(P) == StepStatus.FAILED
    assert cmds(t) == [undo(R, 1)]
    assert delays[0] < delays[1]


def test_timeout_retry_exhaustion_compensates_the_timed_out_step_too() -> None:
    """Timeouts retry the step; when exhausted it is compensated first (it may have run)."""
    w = Walk().run(start(), ok(R))
    for attempt in (1, 2):
        t = w.send(due("timeout", P, attempt), dt=30_000)
        assert w.step(P) == StepStatus.RETRY_WAIT and w.s.steps[1].may_have_run
        assert [x.member for x in t.timers] == [rty(P, attempt + 1)]
        check_timer_dues(t, w.now)
        w.run(due("retry", P, attempt + 1))
    t = w.send(due("timeout", P, 3), dt=30_000)
    assert w.s.status == Status.COMPENSATING and w.step(P) == StepStatus.COMPENSATING
    assert cmds(t) == [undo(P, 1)]
    assert t.commands[0].original_result is None
    assert w.s.last_error == f"{P}: timed out after 30s"
    w.run(comp_ok(P))
    assert cmds(w.log[-1]) == [undo(R, 1)]
    w.run(comp_ok(R))
    assert w.s.status == Status.FAILED
    assert [c for c in w.commands() if c[3]] == [undo(P, 1), undo(R, 1)]


CAPPED = SagaDefinition(
    TYPE,
    1,
    tuple(
        StepDef(
            s.name,
            s.participant,
            s.action,
            s.compensation,
            compensation_retry=RetryPolicy(
                max_attempts=5, initial_backoff_s=1.0, multiplier=2.0, max_backoff_s=3.0
            ),
        )
        for s in D.steps
    ),
)


def test_compensation_failures_retry_with_capped_backoff_then_need_a_person() -> None:
    """A failing compensation is retried with growing, capped backoff; exhausted -> intervention."""
    w = Walk(registry=Registry([CAPPED])).run(start(), ok(R), fail(P))
    policy = CAPPED.steps[0].compensation_retry
    delays = []
    for attempt in range(1, policy.max_attempts):
        t = w.send(comp_fail(R, attempt, retryable=True))
        assert w.s.status == Status.COMPENSATING
        assert w.step(R) == StepStatus.COMPENSATION_WAIT
        assert [x.member for x in t.timers] == [crty(R, attempt + 1)]
        check_timer_dues(t, w.now, CAPPED)
        delays.append(t.timers[0].due_ms - w.now)
        t = w.send(due("retry", R, attempt + 1, True))
        assert cmds(t) == [undo(R, attempt + 1)]
    assert all(d <= 3000 for d in delays) and delays[-1] >= 2400 and delays[0] <= 1200
    t = w.send(comp_fail(R, policy.max_attempts, retryable=True))
    assert w.s.status == Status.NEEDS_INTERVENTION
    assert w.step(R) == StepStatus.COMPENSATION_FAILED
    assert t.timers == () and t.commands == ()
    assert w.s.last_error == f"{R} compensation: nope"


def test_compensation_timeouts_count_as_retryable_failures() -> None:
    """A compensation that never answers times out, is retried, and ends in needs_intervention."""
    w = Walk().run(start(), ok(R), fail(P))
    for attempt in range(1, 5):
        w.run(due("timeout", R, attempt, True), due("retry", R, attempt + 1, True))
    t = w.send(due("timeout", R, 5, True))
    assert t.outcome == "applied" and w.s.status == Status.NEEDS_INTERVENTION


def needs_intervention() -> Walk:
    """R and P done, S fails, P's compensation fails for good."""
    return Walk().run(start(), ok(R), ok(P), fail(S), comp_fail(P))


@pytest.mark.parametrize("action", ["resume", "retry"])
def test_resume_or_retry_out_of_intervention_reissues_the_compensation(action: str) -> None:
    """Resume/retry re-sends the failed compensation with a fresh budget, then carries on."""
    w = needs_intervention()
    t = w.send(op(action))
    assert w.s.status == Status.COMPENSATING and cmds(t) == [undo(P, 2)]
    assert w.s.steps[1].compensation_floor == 1
    # the budget restarted: four more retryable failures are retried
    for attempt in range(2, 6):
        w.run(comp_fail(P, attempt, retryable=True), due("retry", P, attempt + 1, True))
    w.run(comp_ok(P, 6), comp_ok(R))
    assert w.s.status == Status.FAILED


def test_skip_compensation_out_of_intervention_records_it_and_continues() -> None:
    """skip_compensation marks the step compensated by hand and compensates the earlier ones."""
    w = needs_intervention()
    t = w.send(op("skip_compensation", P))
    assert w.step(P) == StepStatus.COMPENSATION_SKIPPED
    assert w.s.steps[1].error == "compensated by hand: ticket 7"
    assert cmds(t) == [undo(R, 1)]
    w.run(comp_ok(R))
    assert w.s.status == Status.FAILED


def test_skip_compensation_naming_another_step_is_ignored() -> None:
    """skip_compensation only acts on the step whose compensation is pending."""
    w = needs_intervention()
    t = w.send(op("skip_compensation", R))
    assert t.outcome == "ignored" and w.s.status == Status.NEEDS_INTERVENTION


def test_abort_in_pending_compensates_the_in_flight_step_too() -> None:
    """An abort undoes the running step (it may have run) and then the finished ones."""
    w = Walk().run(start(), ok(R), ok(P))
    t = w.send(op("abort"))
    assert w.s.last_error == "aborted by ada"
    assert w.step(S) == StepStatus.COMPENSATING and w.s.steps[2].may_have_run
    assert cmds(t) == [undo(S, 1)]
    w.run(comp_ok(S), comp_ok(P), comp_ok(R))
    assert w.s.status == Status.FAILED
    assert [c for c in w.commands() if c[3]] == [undo(S, 1), undo(P, 1), undo(R, 1)]


def test_abort_while_waiting_after_a_plain_failure_does_not_compensate_that_step() -> None:
    """A step whose only attempt said 'failed' did not run, so an abort does not undo it."""
    w = Walk().run(start(), ok(R), fail(P, 1, retryable=True))
    t = w.send(op("abort"))
    assert cmds(t) == [undo(R, 1)] and w.step(P) == StepStatus.FAILED
    assert rty(P, 2) in t.cancel_timers


def test_late_completion_while_compensating_is_compensated_too() -> None:
    """A step that completes after the saga gave up on it is undone after the current one."""
    w = Walk().run(start(), ok(R), ok(P), fail(S))
    assert w.step(P) == StepStatus.COMPENSATING
    t = w.send(ok(S))
    assert t.outcome == "applied" and t.commands == ()
    assert w.step(S) == StepStatus.COMPLETED
    t = w.send(comp_ok(P))
    assert cmds(t) == [undo(S, 1)]
    assert t.commands[0].original_result == result_of(S, 1)
    w.run(comp_ok(S))
    assert cmds(w.log[-1]) == [undo(R, 1)]
    w.run(comp_ok(R))
    assert w.s.status == Status.FAILED
    assert all(w.step(n) == StepStatus.COMPENSATED for n in (R, P, S))


def test_late_completion_after_compensation_was_issued_records_the_result() -> None:
    """A timed-out step already being undone keeps compensating; its late result is recorded."""
    w = Walk().run(start(), ok(R), ok(P), ok(S))
    for attempt in (1, 2):
        w.run(due("timeout", C, attempt), due("retry", C, attempt + 1))
    w.run(due("timeout", C, 3))
    assert w.step(C) == StepStatus.COMPENSATING
    t = w.send(ok(C, 2))
    assert t.outcome == "applied" and t.commands == ()
    assert w.s.steps[3].result == result_of(C, 2)
    assert w.send(ok(C, 3)).outcome == "ignored"


def test_late_completion_in_intervention_is_compensated_after_resume() -> None:
    """A step completing while a person is needed is undone once compensation continues."""
    w = needs_intervention()
    w.run(ok(S))
    t = w.send(op("resume"))
    assert cmds(t) == [undo(P, 2)]
    t = w.send(comp_ok(P, 2))
    assert cmds(t) == [undo(S, 1)]
    w.run(comp_ok(S), comp_ok(R))
    assert w.s.status == Status.FAILED


def test_duplicate_replies_are_ignored() -> None:
    """Re-delivered replies, forward or compensation side, change nothing."""
    w = Walk().run(start(), ok(R))
    for dup in (ok(R), fail(R)):
        assert w.send(dup).outcome == "ignored"
    w.run(fail(P, 1, retryable=True))
    assert w.send(fail(P, 1, retryable=True)).outcome == "ignored"
    w.run(due("retry", P, 2))
    assert w.send(due("retry", P, 2)).outcome == "ignored"
    w.run(fail(P, 2))
    w.run(comp_ok(R))
    assert w.s.status == Status.FAILED
    t = w.send(comp_ok(R))
    assert t.outcome == "ignored" and t.state is w.state


def test_reply_for_an_unknown_saga_is_rejected() -> None:
    """Without a saga there is nothing to act on: every non-start input is rejected."""
    for event in (ok(R), due("timeout", R, 1), op("abort")):
        t = decide(None, event, T0, REG)
        assert t.outcome == "rejected" and t.state is None and "unknown saga" in t.note


@pytest.mark.parametrize(
    "event",
    [ok("nope"), comp_ok("nope"), due("timeout", "nope", 1), op("skip_compensation", "nope")],
    ids=["reply", "compensation-reply", "timer", "operator"],
)
def test_unknown_step_is_rejected(event: Event) -> None:
    """An input naming a step the saga type does not have is rejected, naming the step."""
    w = build("pending")
    t = decide(w.s, event, w.now, REG)
    assert t.outcome == "rejected" and "'nope'" in t.note


def test_unknown_saga_type_is_rejected() -> None:
    """A start for a saga type that is not registered is rejected."""
    t = decide(None, start(saga_type="teleport"), T0, REG)
    assert t.outcome == "rejected" and t.state is None and "teleport" in t.note


def test_saga_of_an_unregistered_definition_version_is_rejected() -> None:
    """A stored saga whose definition version is gone is rejected, unless one is passed in."""
    w = build("pending")
    v2 = SagaDefinition(TYPE, 2, D.steps)
    registry = Registry([v2])
    t = decide(w.s, ok(P, 2), w.now, registry)
    assert t.outcome == "rejected" and "v1" in t.note
    t = decide(w.s, ok(P, 2), w.now, registry, definition=D)
    assert t.outcome == "applied"


def test_a_second_start_for_an_existing_saga_is_ignored() -> None:
    """Start is idempotent: the saga is not restarted, whatever its state."""
    for name in TABLE:
        w = build(name)
        t = w.send(start())
        assert t.outcome == "ignored" and t.state is w.state and t.commands == ()


def test_start_builds_the_fresh_saga() -> None:
    """Start records type, version, data, correlation id and times; step 0 runs at attempt 1."""
    t = decide(None, Start(SID, TYPE, dict(DATA), traceparent="00-ab"), T0, REG)
    s = t.state
    assert s is not None and t.outcome == "applied"
    assert (s.saga_type, s.definition_version, s.version) == (TYPE, 1, 1)
    assert s.status == Status.STARTED and s.current_step == 0
    assert s.data == DATA and s.correlation_id == SID and s.traceparent == "00-ab"
    assert s.created_ms == s.updated_ms == s.entered_ms == T0
    assert [x.status for x in s.steps] == [StepStatus.RUNNING] + [StepStatus.PENDING] * 3


def test_operator_retry_restarts_the_attempt_budget() -> None:
    """After a person retries a step, it gets max_attempts fresh tries."""
    w = Walk().run(start(), *second_attempt(R))
    w.run(op("retry"))
    assert w.s.steps[0].attempt_floor == 2 and w.s.steps[0].may_have_run
    w.run(fail(R, 3, retryable=True), due("retry", R, 4))
    w.run(fail(R, 4, retryable=True), due("retry", R, 5))
    t = w.send(fail(R, 5, retryable=True))
    # the running attempt 2 was abandoned unanswered, so R may have run: it is compensated
    assert cmds(t) == [undo(R, 1)]


def test_stale_timers_after_success_are_ignored() -> None:
    """A timeout for an attempt that already completed changes nothing."""
    w = Walk().run(start(), ok(R))
    assert w.send(due("timeout", R, 1)).outcome == "ignored"


def test_retry_wait_and_compensation_wait_accept_only_their_own_timer() -> None:
    """In retry_wait only the retry timer for the next attempt runs it; likewise compensation."""
    w = Walk().run(start(), fail(R, 1, retryable=True))
    for stale in (due("retry", R, 1), due("retry", R, 3), due("timeout", R, 1)):
        assert w.send(stale).outcome == "ignored"
    assert cmds(w.send(due("retry", R, 2))) == [act(R, 2)]
    w = Walk().run(start(), ok(R), fail(P), comp_fail(R, 1, retryable=True))
    for stale in (due("retry", R, 1, True), due("retry", R, 3, True), due("timeout", R, 1, True)):
        assert w.send(stale).outcome == "ignored"
    assert cmds(w.send(due("retry", R, 2, True))) == [undo(R, 2)]


def test_completion_during_retry_wait_cancels_the_retry() -> None:
    """A late success while waiting to retry completes the step and cancels its retry timer."""
    w = Walk().run(start(), due("timeout", R, 1))
    t = w.send(ok(R, 1))
    assert rty(R, 2) in t.cancel_timers and cmds(t) == [act(P, 1)]


def test_no_transition_sets_and_cancels_the_same_timer() -> None:
    """Regression: a retry timer set by a failure is not also in the cancel list (it was lost)."""
    for events in (
        (start(), fail(R, 1, retryable=True)),
        (start(), due("timeout", R, 1)),
        (start(), ok(R), fail(P), comp_fail(R, 1, retryable=True)),
        (start(), ok(R), fail(P), due("timeout", R, 1, True)),
    ):
        t = Walk().run(*events).log[-1]
        assert t.timers and not {x.member for x in t.timers} & set(t.cancel_timers)


# ---- only what was asked for is applied (forged or stray replies) -------------------------------


@pytest.mark.parametrize(
    ("why", "reply"),
    [
        ("wrong command id", replace(ok(P), command_id=f"{SID}:{P}:action:9")),
        ("another saga's command", replace(ok(P), command_id=f"other:{P}:action:1")),
        ("no command id", replace(ok(P), command_id="")),
        ("attempt never issued", ok(P, 2)),
        ("failure for an attempt never issued", fail(P, 5)),
        (
            "compensation reply with the action's id",
            replace(comp_ok(R), command_id=f"{SID}:{R}:action:1"),
        ),
        ("compensation never issued", comp_ok(R)),
    ],
)
def test_a_reply_to_no_issued_command_changes_nothing(why: str, reply: Reply) -> None:
    """A reply counts only when it answers a command the saga issued and waits for (saga, step,
    attempt, direction, command id); anything else is ignored as stray, with the reason."""
    w = Walk().run(start(), ok(R))  # process_payment attempt 1 is running
    before = w.s
    t = w.send(reply)
    assert t.outcome == "ignored" and t.stray, why
    assert t.state == before and not t.commands and not t.timers and not t.cancel_timers
    assert "stray reply" in t.note
    assert w.send(ok(P)).outcome == "applied"  # the real reply still works afterwards


def test_a_late_reply_to_an_earlier_issued_attempt_is_not_stray() -> None:
    """Attempt 1 was issued (then timed out and retried): its completion is a real answer."""
    w = Walk().run(start(), ok(R), due("timeout", P, 1), due("retry", P, 2))
    t = w.send(ok(P, 1))
    assert not t.stray and t.outcome == "applied"
