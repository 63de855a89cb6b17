"""The saga state machine: `decide(state, event, now_ms, definitions) -> Transition`.

Pure and total: no I/O, no clock (time comes in as `now_ms`), no hidden randomness (jitter is
seeded by saga, step and attempt), and no exceptions for bad input: an input that makes no
sense for the saga is `ignored` (recorded in the history, acted on never) and an input that can
never be processed is `rejected` (the daemon dead-letters it).

Rules worth knowing (the stages themselves are explained in `orchestrator.core.stages`):
- A reply only acts when it answers the attempt the saga is waiting for; anything else is a
  duplicate or late reply and is ignored. Exception: a forward step that completes late, after
  the saga gave up on it, is compensated too (it did run).
- A branch of a parallel stage has its own retries and timeout. When one fails for good, the
  branches still at work stop, and compensation runs stage by stage, highest first: the
  current stage's branches that completed or may have run together, then each earlier stage.
  When the last one is compensated the saga is `failed`.
- A compensation that keeps failing, or fails non-retryably, puts the saga in
  `needs_intervention`; a person resumes it or records a manual compensation.
- A signal acts only on a wait step of the current stage that waits for it (or rejects with
  it); any other signal is refused with its reason, and recorded like any ignored input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

from orchestrator.core.conditions import why_false
from orchestrator.core.definition import SIGNAL_NAME, SagaDefinition
from orchestrator.core.model import (
    FORWARD,
    Event,
    Operator,
    Reply,
    SagaState,
    Signal,
    Start,
    Status,
    StepState,
    StepStatus,
    TimerDue,
    Transition,
    command_id,
)
from orchestrator.core.stages import IN_COMPENSATION, MAY_HAVE_RUN, Machine


def decide(
    state: SagaState | None,
    event: Event,
    now_ms: int,
    definitions: Mapping[str, SagaDefinition],
    definition: SagaDefinition | None = None,
) -> Transition:
    """Apply one input to one saga. `definition` overrides the lookup (for older versions)."""
    if isinstance(event, Start):
        return _start(state, event, now_ms, definitions)
    if state is None:
        return Transition("rejected", None, f"{describe_event(event)} for an unknown saga")
    d = definition or definitions.get(state.saga_type)
    if d is None or (d.version != state.definition_version and definition is None):
        return Transition(
            "rejected",
            None,
            f"saga type {state.saga_type} v{state.definition_version} is not registered",
        )
    if len(state.steps) != len(d.steps) or not 0 <= state.current_step < len(d.steps):
        # a state that does not fit its definition (never written by decide): refuse it whole
        return Transition(
            "rejected",
            None,
            f"{describe_event(event)}: the saga's state ({len(state.steps)} steps, current step "
            f"{state.current_step}) does not fit saga {d.name} v{d.version} ({len(d.steps)} steps)",
        )
    if isinstance(event, Signal):
        refusal = _refusal(state, d, event)
        if refusal:
            # marked as a copy: a redelivery (same id) of a refused or already applied signal is
            # recorded once, not again (step.lua looks for its id in the history)
            note = f"{describe_event(event)}: refused ({refusal})"
            return Transition("ignored", state, note, duplicate=True)
        m = Machine(d, state, now_ms)
        _signal(m, event)
        return m.transition(describe_event(event))
    step_name = event.step
    if step_name is not None and d.index(step_name) is None:
        return Transition(
            "rejected", None, f"{describe_event(event)}: saga {d.name} has no step {step_name!r}"
        )
    if isinstance(event, Reply) and (stray := _stray(state, d, event)):
        note = f"{describe_event(event)}: ignored (stray reply: {stray})"
        return Transition("ignored", state, note, stray=True)
    m = Machine(d, state, now_ms)
    if isinstance(event, Reply):
        _reply(m, event)
    elif isinstance(event, TimerDue):
        _timer(m, event)
    else:
        _operator(m, event)
    t = m.transition(describe_event(event))
    if (
        t.outcome == "ignored"
        and isinstance(event, Reply | TimerDue)
        and _answered(state, d, event)
    ):
        return replace(t, duplicate=True)
    return t


def _start(
    state: SagaState | None, event: Start, now_ms: int, definitions: Mapping[str, SagaDefinition]
) -> Transition:
    if state is not None:
        return Transition("ignored", state, f"start for existing saga (state {state.status})")
    d = definitions.get(event.saga_type)
    if d is None:
        return Transition("rejected", None, f"unknown saga type {event.saga_type!r}")
    fresh = SagaState(
        saga_id=event.saga_id,
        saga_type=d.name,
        definition_version=d.version,
        status=Status.STARTED,
        current_step=0,
        steps=tuple(StepState() for _ in d.steps),
        data=event.data,
        created_ms=now_ms,
        updated_ms=now_ms,
        entered_ms=now_ms,
        correlation_id=event.correlation_id or event.saga_id,
        traceparent=event.traceparent,
    )
    m = Machine(d, fresh, now_ms)
    m.begin_stage(0)
    return m.transition("start")


def _stray(state: SagaState, d: SagaDefinition, r: Reply) -> str:
    """Why a reply answers no command this saga issued ('' when it does). Only what was asked
    for is applied: the command id must be the one issued for (saga, step, direction, attempt),
    and that attempt must have been sent."""
    i = d.index(r.step)
    assert i is not None
    s = state.steps[i]
    if d.steps[i].is_wait:
        return f"step {r.step} waits for a signal and sends no command"
    expected = command_id(state.saga_id, r.step, r.compensation, r.attempt)
    if r.command_id != expected:
        return f"command id {r.command_id[:80]!r} is not {expected!r}"
    issued = s.compensation_attempts if r.compensation else s.attempts
    if not 1 <= r.attempt <= issued:
        side = "compensation attempt" if r.compensation else "attempt"
        return f"{side} {r.attempt} was never issued (issued: {issued})"
    return ""


def _answered(state: SagaState, d: SagaDefinition, e: Reply | TimerDue) -> bool:
    """Whether the attempt a reply or timer is about is one the saga no longer waits for: it
    was answered, timed out, or (a retry timer) already started. Such an input ignored is a
    redelivery or a late copy: a duplicate, not news."""
    i = d.index(e.step)
    assert i is not None
    s = state.steps[i]
    issued = s.compensation_attempts if e.compensation else s.attempts
    if isinstance(e, TimerDue) and e.kind == "retry":
        return issued >= e.attempt
    if isinstance(e, Reply) and e.kind == ("completed" if e.compensation else "compensated"):
        return False  # the wrong kind for its direction: malformed, not a copy
    waiting = (
        (StepStatus.COMPENSATING,) if e.compensation else (StepStatus.RUNNING, StepStatus.WAITING)
    )
    return issued > e.attempt or (issued == e.attempt and s.status not in waiting)


def _shown(text: object) -> str:
    """Outside text (a signal's name or sender) as it goes into a note: one short line."""
    if isinstance(text, str) and text.isprintable() and len(text) <= 64 and text.strip():
        return text
    shown = repr(text)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


def describe_event(event: Event) -> str:
    """An input in a few words, as history notes name it (`completed hotel#2`)."""
    if isinstance(event, Reply):
        side = " compensation" if event.compensation else ""
        # "retryable" is the one part of a reply that decides its fate and is not otherwise in
        # the history: written here, a recorded history replays (`saga replay`) from Redis
        again = " retryable" if event.kind == "failed" and event.retryable else ""
        return f"{event.kind}{side} {event.step}#{event.attempt}{again}"
    if isinstance(event, TimerDue):
        side = " compensation" if event.compensation else ""
        return f"{event.kind}{side} timer {event.step}#{event.attempt}"
    if isinstance(event, Operator):
        who = f" by {event.operator}" if event.operator else ""
        why = f": {event.reason}" if event.reason else ""
        return f"operator {event.action}{' ' + event.step if event.step else ''}{who}{why}"
    if isinstance(event, Signal):
        who = f" from {_shown(event.sender)}" if event.sender else ""
        return f"signal {_shown(event.name)}{who}"
    return "start"


# ---- replies and timers -------------------------------------------------------------------------


def _reply(m: Machine, r: Reply) -> None:
    i = m.d.index(r.step)
    assert i is not None
    s = m.steps[i]
    if r.compensation:
        _compensation_reply(m, i, s, r)
        return
    if r.kind == "compensated":
        m.ignore("compensated reply for a forward command")
    elif r.kind == "completed":
        if (
            m.status in FORWARD
            and m.in_stage(i)
            and s.status in (StepStatus.RUNNING, StepStatus.RETRY_WAIT)
        ):
            m.step_succeeded(i, r.result)
        elif s.status in MAY_HAVE_RUN and m.status not in FORWARD:
            # It ran after all: record the result and make sure it is compensated.
            m.set_step(i, status=StepStatus.COMPLETED, result=r.result)
            m.notes.append(f"late completion of {r.step}, will be compensated")
            if m.status == Status.FAILED or m.status == Status.COMPENSATING:
                m.compensate_next()
        elif (
            s.status
            in (StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT, StepStatus.COMPENSATED)
            and s.result is None
        ):
            m.set_step(i, result=r.result)
            m.notes.append(f"late completion of {r.step}, compensation already issued")
        else:
            m.ignore(f"step is {s.status}")
    elif (
        m.status in FORWARD
        and m.in_stage(i)
        and s.status == StepStatus.RUNNING
        and r.attempt == s.attempts
    ):
        m.step_failed(i, r.reason or "failed", r.retryable, timed_out=False)
    else:
        m.ignore(f"step is {s.status}, attempt {s.attempts}")


def _compensation_reply(m: Machine, i: int, s: StepState, r: Reply) -> None:
    if r.kind == "compensated":
        if s.status in (*IN_COMPENSATION, StepStatus.COMPENSATION_FAILED):
            m.cancel_compensation_timers(i)
            m.set_step(i, status=StepStatus.COMPENSATED, error="")
            m.compensate_next()
        else:
            m.ignore(f"step is {s.status}")
    elif (
        r.kind == "failed"
        and s.status == StepStatus.COMPENSATING
        and r.attempt == s.compensation_attempts
    ):
        m.compensation_failed(i, r.reason or "compensation failed", r.retryable)
    else:
        m.ignore(f"step is {s.status}, compensation attempt {s.compensation_attempts}")


def _timer(m: Machine, t: TimerDue) -> None:
    i = m.d.index(t.step)
    assert i is not None
    s, sd = m.steps[i], m.d.steps[i]
    if t.compensation:
        if (
            t.kind == "timeout"
            and s.status == StepStatus.COMPENSATING
            and t.attempt == s.compensation_attempts
        ):
            m.compensation_failed(i, "compensation timed out", retryable=True)
        elif (
            t.kind == "retry"
            and s.status == StepStatus.COMPENSATION_WAIT
            and t.attempt == s.compensation_attempts + 1
        ):
            m.run_compensation(i, t.attempt)
        else:
            m.ignore(f"step is {s.status}")
        return
    if m.status not in FORWARD or not m.in_stage(i):
        m.ignore(f"saga is {m.status}" if m.status not in FORWARD else f"step is {s.status}")
    elif t.kind == "timeout" and s.status == StepStatus.WAITING and t.attempt == s.attempts:
        # a wait has no retries: no signal in time fails it, and the saga compensates
        m.cancel_step_timers(i)
        m.last_error = f"{sd.name}: no signal {sd.signal!r} within {sd.timeout_s:g}s"
        m.set_step(i, status=StepStatus.TIMED_OUT, error=f"no signal within {sd.timeout_s:g}s")
        m.stop_stage(f"{sd.name} timed out")
        m.compensate_next()
    elif t.kind == "timeout" and s.status == StepStatus.RUNNING and t.attempt == s.attempts:
        m.step_failed(i, f"timed out after {sd.timeout_s:g}s", retryable=True, timed_out=True)
        if m.steps[i].status == StepStatus.RETRY_WAIT:
            m.set_step(i, may_have_run=True)
    elif t.kind == "retry" and s.status == StepStatus.RETRY_WAIT and t.attempt == s.attempts + 1:
        m.run_step(i, t.attempt)
    else:
        m.ignore(f"step is {s.status}, attempt {s.attempts}")


# ---- operators ----------------------------------------------------------------------------------


def _operator(m: Machine, o: Operator) -> None:
    m.notes.append(o.reason) if o.reason else None
    if o.action == "abort":
        if m.status not in FORWARD:
            m.ignore(f"saga is {m.status}")
            return
        m.last_error = f"aborted by {o.operator or 'operator'}"
        # Every branch still at work stops; one whose command is in flight may still run, so
        # it is compensated too, with the branches that completed.
        m.stop_stage("aborted")
        m.compensate_next()
    elif o.action == "retry" and m.status in FORWARD:
        _retry_branches(m, o.step)
    elif o.action in ("retry", "resume") and m.status in (
        Status.COMPENSATING,
        Status.NEEDS_INTERVENTION,
    ):
        stuck = [
            i
            for i, s in enumerate(m.steps)
            if s.status in (*IN_COMPENSATION, StepStatus.COMPENSATION_FAILED)
        ]
        for i in stuck:  # every compensation of the stage in play goes again, together
            s = m.steps[i]
            m.cancel_compensation_timers(i)
            m.set_step(i, compensation_floor=s.compensation_attempts)
            m.run_compensation(i, s.compensation_attempts + 1)
        if not stuck:
            m.compensate_next()
            m.acted = True
    elif o.action == "skip_compensation" and m.status in (
        Status.COMPENSATING,
        Status.NEEDS_INTERVENTION,
    ):
        for i, s in enumerate(m.steps):
            named = o.step is None or m.d.steps[i].name == o.step
            if named and s.status in (*IN_COMPENSATION, StepStatus.COMPENSATION_FAILED):
                m.cancel_compensation_timers(i)
                m.set_step(
                    i,
                    status=StepStatus.COMPENSATION_SKIPPED,
                    error=f"compensated by hand: {o.reason}",
                )
                m.compensate_next()
                return
        m.ignore(f"no compensation of {o.step or 'any step'} is pending")
    else:
        m.ignore(f"{o.action} does not apply to a saga that is {m.status}")


def _retry_branches(m: Machine, step: str | None) -> None:
    """A new attempt now, with a fresh retry budget, for the named branch of the current stage
    (or for each branch of it that is running or waiting for a retry)."""
    stage = m.stage()
    named = m.d.index(step) if step is not None else None
    chosen = [named] if named is not None and named in stage else list(stage)
    retried = False
    for i in chosen:
        s = m.steps[i]
        if s.status not in (StepStatus.RUNNING, StepStatus.RETRY_WAIT):
            continue
        m.cancel_step_timers(i)
        m.set_step(
            i,
            attempt_floor=s.attempts,
            may_have_run=s.may_have_run or s.status == StepStatus.RUNNING,
        )
        m.run_step(i, s.attempts + 1)
        retried = True
    if not retried:
        m.ignore(", ".join(f"step is {m.steps[i].status}" for i in chosen))


# ---- signals ------------------------------------------------------------------------------------


def _waiting_for(state: SagaState, d: SagaDefinition, name: str) -> int | None:
    """The wait step of the current stage that is waiting and takes this signal."""
    for i in d.stages[d.stage_of(state.current_step)]:
        sd = d.steps[i]
        takes = name == sd.signal or name in sd.reject_signals
        if sd.is_wait and takes and state.steps[i].status == StepStatus.WAITING:
            return i
    return None


def _refusal(state: SagaState, d: SagaDefinition, sig: Signal) -> str:
    """Why a signal cannot be applied to this saga now ('' when it can)."""
    if not isinstance(sig.name, str) or not SIGNAL_NAME.match(sig.name):
        return "not a signal name (1 to 64 letters, digits, '_', '.' or '-')"
    if not isinstance(sig.data, Mapping):
        return f"its data must be an object, not {type(sig.data).__name__}"
    if state.status not in FORWARD:
        return f"saga is {state.status}"
    if _waiting_for(state, d, sig.name) is not None:
        return ""
    takers = [
        i
        for i, sd in enumerate(d.steps)
        if sd.is_wait and (sig.name == sd.signal or sig.name in sd.reject_signals)
    ]
    waiting = [i for i, s in enumerate(state.steps) if s.status == StepStatus.WAITING]
    for i in takers:
        status = state.steps[i].status
        name = d.steps[i].name
        when = d.steps[i].when
        if status == StepStatus.COMPLETED:
            return f"step {name} already received {d.steps[i].signal!r}"
        if status == StepStatus.SKIPPED and when is not None:
            return f"step {name} was skipped: {why_false(when)}"
        if status == StepStatus.PENDING and not waiting:
            return f"step {name} is pending, not waiting yet"
    if waiting:
        sd = d.steps[waiting[0]]
        takes = " or ".join(repr(x) for x in (sd.signal, *sd.reject_signals))
        return f"step {sd.name} waits for {takes}, not {sig.name!r}"
    return f"no step waits for signal {sig.name!r}"


def _signal(m: Machine, sig: Signal) -> None:
    i = _waiting_for(m.before, m.d, sig.name)
    assert i is not None  # _refusal said it applies
    sd = m.d.steps[i]
    data = {str(k): _text(v) for k, v in sig.data.items()}
    if sig.name == sd.signal:
        # the approval's data is the step's result, as text like every step's result
        m.step_succeeded(i, data)
        return
    who = f" from {_shown(sig.sender)}" if sig.sender else ""
    reason = f"rejected by signal {sig.name!r}{who}"
    m.last_error = f"{sd.name}: {reason}"
    m.cancel_step_timers(i)
    # the data is kept: a rejection often says why
    m.set_step(i, status=StepStatus.FAILED, error=reason, result=data)
    m.stop_stage(f"{sd.name} rejected")
    m.compensate_next()


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False, default=str)
    except (TypeError, ValueError, RecursionError):  # mixed keys, NaN, absurd nesting
        return type(value).__name__
