"""The saga state machine: `decide(state, event, now_ms, definitions) -> Transition`.

Pure and total: no I/O, no clock (time comes in as `now_ms`), no hidden randomness (jitter is
seeded by saga, step and attempt), and no exceptions for bad input: an input that makes no
sense for the saga is `ignored` (recorded in the history, acted on never) and an input that can
never be processed is `rejected` (the daemon dead-letters it).

Rules worth knowing:
- A reply only acts when it answers the attempt the saga is waiting for; anything else is a
  duplicate or late reply and is ignored. Exception: a forward step that completes late, after
  the saga gave up on it, is compensated too (it did run).
- Compensation runs one step at a time, highest index first, over every step that completed or
  may have run (timed out or aborted). When the last one is compensated the saga is `failed`.
- A compensation that keeps failing, or fails non-retryably, puts the saga in
  `needs_intervention`; a person resumes it or records a manual compensation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import (
    FORWARD,
    Command,
    Event,
    Operator,
    Reply,
    SagaState,
    Start,
    Status,
    StepState,
    StepStatus,
    Timer,
    TimerDue,
    Transition,
    command_id,
    timer_member,
)

_IN_COMPENSATION = (StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT)
_NEEDS_COMPENSATION = (StepStatus.COMPLETED,)
_MAY_HAVE_RUN = (StepStatus.TIMED_OUT, StepStatus.FAILED, StepStatus.RUNNING, StepStatus.RETRY_WAIT)


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
        return Transition("rejected", None, f"{_describe(event)} for an unknown saga")
    d = definition or definitions.get(state.saga_type)
    if d is None or (d.version != state.definition_version and definition is None):
        return Transition(
            "rejected",
            None,
            f"saga type {state.saga_type} v{state.definition_version} is not registered",
        )
    step_name = event.step
    if step_name is not None and d.index(step_name) is None:
        return Transition(
            "rejected", None, f"{_describe(event)}: saga {d.name} has no step {step_name!r}"
        )
    if isinstance(event, Reply) and (stray := _stray(state, d, event)):
        return Transition("ignored", state, f"{_describe(event)}: ignored (stray reply: {stray})",
                          stray=True)  # fmt: skip
    m = _Machine(d, state, now_ms)
    if isinstance(event, Reply):
        m.reply(event)
    elif isinstance(event, TimerDue):
        m.timer(event)
    else:
        m.operator(event)
    t = m.transition(_describe(event))
    if t.outcome == "ignored" and not isinstance(event, Operator) and _answered(state, d, event):
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
    m = _Machine(d, fresh, now_ms)
    m.run_step(0, m.steps[0].attempts + 1)
    m.status = Status.STARTED
    return m.transition("start")


def _stray(state: SagaState, d: SagaDefinition, r: Reply) -> str:
    """Why a reply answers no command this saga issued ('' when it does). Only what was asked
    for is applied: the command id must be the one issued for (saga, step, direction, attempt),
    and that attempt must have been sent."""
    i = d.index(r.step)
    assert i is not None
    s = state.steps[i]
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
    waiting = StepStatus.COMPENSATING if e.compensation else StepStatus.RUNNING
    return issued > e.attempt or (issued == e.attempt and s.status != waiting)


def _describe(event: Event) -> str:
    if isinstance(event, Reply):
        side = " compensation" if event.compensation else ""
        return f"{event.kind}{side} {event.step}#{event.attempt}"
    if isinstance(event, TimerDue):
        side = " compensation" if event.compensation else ""
        return f"{event.kind}{side} timer {event.step}#{event.attempt}"
    if isinstance(event, Operator):
        who = f" by {event.operator}" if event.operator else ""
        why = f": {event.reason}" if event.reason else ""
        return f"operator {event.action}{' ' + event.step if event.step else ''}{who}{why}"
    return "start"


class _Machine:
    """Mutable working copy of one saga during one decision."""

    def __init__(self, d: SagaDefinition, state: SagaState, now_ms: int) -> None:
        self.d = d
        self.before = state
        self.now = now_ms
        self.status = state.status
        self.current = state.current_step
        self.steps = list(state.steps)
        self.last_error = state.last_error
        self.commands: list[Command] = []
        self.timers: list[Timer] = []
        self.cancel: list[str] = []
        self.acted = False
        self.notes: list[str] = []

    # ---- outcome ----
    def transition(self, cause: str) -> Transition:
        if not self.acted:
            return Transition(
                "ignored", self.before, f"{cause}: ignored ({'; '.join(self.notes) or 'stale'})"
            )
        b = self.before
        changed = self.status != b.status
        state = replace(
            b,
            status=self.status,
            current_step=self.current,
            steps=tuple(self.steps),
            last_error=self.last_error,
            version=b.version + 1,
            updated_ms=self.now,
            entered_ms=self.now if changed or b.version == 0 else b.entered_ms,
        )
        arrow = f"{b.status} -> {self.status}" if b.version else f"-> {self.status}"
        detail = f" ({'; '.join(self.notes)})" if self.notes else ""
        # A timer set in this decision supersedes a cancellation of the same member: a failure
        # cancels the step's retry timer for attempt n+1 and then sets exactly that timer. The
        # store applies timers first and cancellations after (step.lua: ZADD, then ZREM), so
        # without this filter the retry timer was removed as soon as it was written and the saga
        # waited in retry_wait / compensation_wait forever (invariant 1, nothing lost).
        setting = {t.member for t in self.timers}
        cancel = tuple(c for c in self.cancel if c not in setting)
        return Transition(
            "applied",
            state,
            f"{cause}: {arrow}{detail}",
            tuple(self.commands),
            tuple(self.timers),
            cancel,
        )

    def ignore(self, why: str) -> None:
        self.notes.append(why)

    def set_step(self, i: int, **changes: object) -> StepState:
        self.steps[i] = replace(self.steps[i], **changes)  # type: ignore[arg-type]
        self.acted = True
        return self.steps[i]

    def _member(self, kind: str, i: int, attempt: int, comp: bool) -> str:
        return timer_member(self.before.saga_id, kind, self.d.steps[i].name, attempt, comp)

    def _cancel_step_timers(self, i: int) -> None:
        s = self.steps[i]
        self.cancel += [
            self._member("timeout", i, s.attempts, False),
            self._member("retry", i, s.attempts + 1, False),
        ]

    def _cancel_compensation_timers(self, i: int) -> None:
        s = self.steps[i]
        self.cancel += [
            self._member("timeout", i, s.compensation_attempts, True),
            self._member("retry", i, s.compensation_attempts + 1, True),
        ]

    # ---- forward ----
    def run_step(self, i: int, attempt: int) -> None:
        sd = self.d.steps[i]
        self.current = i
        self.set_step(i, status=StepStatus.RUNNING, attempts=attempt)
        self.commands.append(
            Command(
                command_id(self.before.saga_id, sd.name, False, attempt),
                sd.participant,
                sd.action,
                sd.name,
                attempt,
                False,
            )
        )
        self.timers.append(
            Timer(self._member("timeout", i, attempt, False), self.now + int(sd.timeout_s * 1000))
        )
        if self.status not in FORWARD or (self.status == Status.STARTED and i > 0):
            self.status = Status.PENDING

    def step_succeeded(self, i: int, result: dict[str, str]) -> None:
        self._cancel_step_timers(i)
        self.set_step(i, status=StepStatus.COMPLETED, result=result, error="")
        if i + 1 < len(self.d.steps):
            self.status = Status.PENDING
            self.run_step(i + 1, self.steps[i + 1].attempts + 1)
        else:
            self.status = Status.COMPLETED
            self.notes.append("all steps completed")

    def step_failed(self, i: int, reason: str, retryable: bool, timed_out: bool) -> None:
        sd, s = self.d.steps[i], self.steps[i]
        self._cancel_step_timers(i)
        self.last_error = f"{sd.name}: {reason}"
        may_have_run = s.may_have_run or timed_out
        if retryable and s.attempts - s.attempt_floor < sd.retry.max_attempts:
            delay = sd.retry.backoff_s(s.attempts, f"{self.before.saga_id}:{sd.name}:{s.attempts}")
            self.set_step(i, status=StepStatus.RETRY_WAIT, error=reason, may_have_run=may_have_run)
            self.timers.append(
                Timer(self._member("retry", i, s.attempts + 1, False), self.now + int(delay * 1000))
            )
            self.notes.append(f"retry in {delay:.2f}s")
            return
        status = StepStatus.TIMED_OUT if timed_out else StepStatus.FAILED
        self.set_step(i, status=status, error=reason, may_have_run=may_have_run)
        self.compensate_next()

    # ---- backward ----
    def compensate_next(self) -> None:
        """Start the next compensation (highest index first) or finish as failed."""
        self.status = Status.COMPENSATING
        if any(s.status in _IN_COMPENSATION for s in self.steps):
            return
        for i in range(len(self.steps) - 1, -1, -1):
            s = self.steps[i]
            if s.status in _NEEDS_COMPENSATION or (s.status in _MAY_HAVE_RUN and s.may_have_run):
                self.run_compensation(i, s.compensation_attempts + 1)
                return
        self.status = Status.FAILED
        self.notes.append("compensation finished")

    def run_compensation(self, i: int, attempt: int) -> None:
        sd, s = self.d.steps[i], self.steps[i]
        self.status = Status.COMPENSATING
        self.set_step(i, status=StepStatus.COMPENSATING, compensation_attempts=attempt)
        cid = command_id(self.before.saga_id, sd.name, True, attempt)
        self.commands.append(
            Command(cid, sd.participant, sd.compensation, sd.name, attempt, True, s.result)
        )
        due = self.now + int(sd.compensation_timeout_s * 1000)
        self.timers.append(Timer(self._member("timeout", i, attempt, True), due))

    def compensation_failed(self, i: int, reason: str, retryable: bool) -> None:
        sd, s = self.d.steps[i], self.steps[i]
        self._cancel_compensation_timers(i)
        self.last_error = f"{sd.name} compensation: {reason}"
        policy = sd.compensation_retry
        if retryable and s.compensation_attempts - s.compensation_floor < policy.max_attempts:
            delay = policy.backoff_s(
                s.compensation_attempts,
                f"{self.before.saga_id}:{sd.name}:c{s.compensation_attempts}",
            )
            self.set_step(i, status=StepStatus.COMPENSATION_WAIT, error=reason)
            due = self.now + int(delay * 1000)
            self.timers.append(
                Timer(self._member("retry", i, s.compensation_attempts + 1, True), due)
            )
            self.notes.append(f"compensation retry in {delay:.2f}s")
            return
        self.set_step(i, status=StepStatus.COMPENSATION_FAILED, error=reason)
        self.status = Status.NEEDS_INTERVENTION
        self.notes.append("a person must act")

    # ---- inputs ----
    def reply(self, r: Reply) -> None:
        i = self.d.index(r.step)
        assert i is not None
        s = self.steps[i]
        if r.compensation:
            self._compensation_reply(i, s, r)
            return
        if r.kind == "compensated":
            self.ignore("compensated reply for a forward command")
        elif r.kind == "completed":
            if (
                self.status in FORWARD
                and i == self.current
                and s.status in (StepStatus.RUNNING, StepStatus.RETRY_WAIT)
            ):
                self.step_succeeded(i, r.result)
            elif s.status in _MAY_HAVE_RUN and self.status not in FORWARD:
                # It ran after all: record the result and make sure it is compensated.
                self.set_step(i, status=StepStatus.COMPLETED, result=r.result)
                self.notes.append(f"late completion of {r.step}, will be compensated")
                if self.status == Status.FAILED or self.status == Status.COMPENSATING:
                    self.compensate_next()
            elif (
                s.status
                in (StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT, StepStatus.COMPENSATED)
                and s.result is None
            ):
                self.set_step(i, result=r.result)
                self.notes.append(f"late completion of {r.step}, compensation already issued")
            else:
                self.ignore(f"step is {s.status}")
        elif (
            self.status in FORWARD
            and i == self.current
            and s.status == StepStatus.RUNNING
            and r.attempt == s.attempts
        ):
            self.step_failed(i, r.reason or "failed", r.retryable, timed_out=False)
        else:
            self.ignore(f"step is {s.status}, attempt {s.attempts}")

    def _compensation_reply(self, i: int, s: StepState, r: Reply) -> None:
        if r.kind == "compensated":
            if s.status in (*_IN_COMPENSATION, StepStatus.COMPENSATION_FAILED):
                self._cancel_compensation_timers(i)
                self.set_step(i, status=StepStatus.COMPENSATED, error="")
                self.compensate_next()
            else:
                self.ignore(f"step is {s.status}")
        elif (
            r.kind == "failed"
            and s.status == StepStatus.COMPENSATING
            and r.attempt == s.compensation_attempts
        ):
            self.compensation_failed(i, r.reason or "compensation failed", r.retryable)
        else:
            self.ignore(f"step is {s.status}, compensation attempt {s.compensation_attempts}")

    def timer(self, t: TimerDue) -> None:
        i = self.d.index(t.step)
        assert i is not None
        s = self.steps[i]
        if t.compensation:
            if (
                t.kind == "timeout"
                and s.status == StepStatus.COMPENSATING
                and t.attempt == s.compensation_attempts
            ):
                self.compensation_failed(i, "compensation timed out", retryable=True)
            elif (
                t.kind == "retry"
                and s.status == StepStatus.COMPENSATION_WAIT
                and t.attempt == s.compensation_attempts + 1
            ):
                self.run_compensation(i, t.attempt)
            else:
                self.ignore(f"step is {s.status}")
            return
        if self.status not in FORWARD or i != self.current:
            self.ignore(f"saga is {self.status}")
        elif t.kind == "timeout" and s.status == StepStatus.RUNNING and t.attempt == s.attempts:
            self.step_failed(
                i, f"timed out after {self.d.steps[i].timeout_s:g}s", retryable=True, timed_out=True
            )
            if self.steps[i].status == StepStatus.RETRY_WAIT:
                self.set_step(i, may_have_run=True)
        elif (
            t.kind == "retry" and s.status == StepStatus.RETRY_WAIT and t.attempt == s.attempts + 1
        ):
            self.run_step(i, t.attempt)
        else:
            self.ignore(f"step is {s.status}, attempt {s.attempts}")

    def operator(self, o: Operator) -> None:
        self.notes.append(o.reason) if o.reason else None
        if o.action == "abort":
            if self.status not in FORWARD:
                self.ignore(f"saga is {self.status}")
                return
            i, s = self.current, self.steps[self.current]
            self._cancel_step_timers(i)
            self.last_error = f"aborted by {o.operator or 'operator'}"
            # The step in flight may still run: compensate it too.
            self.set_step(
                i,
                status=StepStatus.FAILED,
                error="aborted",
                may_have_run=s.status == StepStatus.RUNNING or s.may_have_run,
            )
            self.compensate_next()
        elif o.action == "retry" and self.status in FORWARD:
            i, s = self.current, self.steps[self.current]
            if s.status not in (StepStatus.RUNNING, StepStatus.RETRY_WAIT):
                self.ignore(f"step is {s.status}")
                return
            self._cancel_step_timers(i)
            self.set_step(
                i,
                attempt_floor=s.attempts,
                may_have_run=s.may_have_run or s.status == StepStatus.RUNNING,
            )
            self.run_step(i, s.attempts + 1)
        elif o.action in ("retry", "resume") and self.status in (
            Status.COMPENSATING,
            Status.NEEDS_INTERVENTION,
        ):
            for i, s in enumerate(self.steps):
                if s.status in (*_IN_COMPENSATION, StepStatus.COMPENSATION_FAILED):
                    self._cancel_compensation_timers(i)
                    self.set_step(i, compensation_floor=s.compensation_attempts)
                    self.run_compensation(i, s.compensation_attempts + 1)
                    return
            self.compensate_next()
            self.acted = True
        elif o.action == "skip_compensation" and self.status in (
            Status.COMPENSATING,
            Status.NEEDS_INTERVENTION,
        ):
            for i, s in enumerate(self.steps):
                named = o.step is None or self.d.steps[i].name == o.step
                if named and s.status in (*_IN_COMPENSATION, StepStatus.COMPENSATION_FAILED):
                    self._cancel_compensation_timers(i)
                    self.set_step(
                        i,
                        status=StepStatus.COMPENSATION_SKIPPED,
                        error=f"compensated by hand: {o.reason}",
                    )
                    self.compensate_next()
                    return
            self.ignore(f"no compensation of {o.step or 'any step'} is pending")
        else:
            self.ignore(f"{o.action} does not apply to a saga that is {self.status}")
