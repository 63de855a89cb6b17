"""The stage machine behind `decide`: a mutable working copy of one saga during one decision.

A saga runs stage by stage (`SagaDefinition.stages`): a stage is one step, or one group's run
of steps that start together. `current_step` is the index of the first step of the current
stage. Beginning a stage skips each step whose condition is false, sends each action step's
command and sets a timeout for each wait step; a stage of skipped steps only is passed at once.
The stage ends when each of its steps completed or was skipped.

Compensation runs stage by stage, backwards: the highest stage that holds a step to undo (one
that completed, or may have run) has all of those steps' compensations issued together, and
the next stage down starts only when none is in flight. For a straight line (one step a stage)
that is exactly one step at a time, highest index first. Skipped steps, wait steps and steps
that never started are never compensated.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.conditions import why_false
from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import (
    FORWARD,
    Command,
    SagaState,
    Status,
    StepState,
    StepStatus,
    Timer,
    Transition,
    command_id,
    timer_member,
)

IN_COMPENSATION = (StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT)
MAY_HAVE_RUN = (StepStatus.TIMED_OUT, StepStatus.FAILED, StepStatus.RUNNING, StepStatus.RETRY_WAIT)
#: a branch still at work in its stage (an action in flight or due again, or a wait)
IN_FLIGHT = (StepStatus.RUNNING, StepStatus.RETRY_WAIT, StepStatus.WAITING)
DONE = (StepStatus.COMPLETED, StepStatus.SKIPPED)


class Machine:
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

    def stage(self) -> range:
        """The current stage's step indexes."""
        return self.d.stages[self.d.stage_of(self.current)]

    def in_stage(self, i: int) -> bool:
        return self.d.stage_of(i) == self.d.stage_of(self.current)

    def _member(self, kind: str, i: int, attempt: int, comp: bool) -> str:
        return timer_member(self.before.saga_id, kind, self.d.steps[i].name, attempt, comp)

    def cancel_step_timers(self, i: int) -> None:
        s = self.steps[i]
        self.cancel.append(self._member("timeout", i, s.attempts, False))
        if not self.d.steps[i].is_wait:  # a wait has no retry timer
            self.cancel.append(self._member("retry", i, s.attempts + 1, False))

    def cancel_compensation_timers(self, i: int) -> None:
        s = self.steps[i]
        self.cancel += [
            self._member("timeout", i, s.compensation_attempts, True),
            self._member("retry", i, s.compensation_attempts + 1, True),
        ]

    # ---- forward ----
    def begin_stage(self, k: int) -> None:
        """Begin stage k (and the stages after it while a whole stage is skipped), or complete
        the saga after the last one. Conditions see the saga data as it is now."""
        for stage in self.d.stages[k:]:
            self.current = stage.start
            if self.status == Status.STARTED and stage.start > 0:
                self.status = Status.PENDING
            ran = False
            for i in stage:
                sd = self.d.steps[i]
                if sd.when is not None and not sd.when.evaluate(self.before.data):
                    self.set_step(i, status=StepStatus.SKIPPED)
                    self.notes.append(f"{sd.name} skipped: {why_false(sd.when)}")
                elif sd.is_wait:
                    self.begin_wait(i)
                    ran = True
                else:
                    self.run_step(i, self.steps[i].attempts + 1)
                    ran = True
            if ran:
                return
        self.status = Status.COMPLETED
        skipped = any(s.status == StepStatus.SKIPPED for s in self.steps)
        self.notes.append("all steps completed" + (" or skipped" if skipped else ""))

    def begin_wait(self, i: int) -> None:
        sd = self.d.steps[i]
        attempt = self.steps[i].attempts + 1
        self.set_step(i, status=StepStatus.WAITING, attempts=attempt)
        due = self.now + int(sd.timeout_s * 1000)
        self.timers.append(Timer(self._member("timeout", i, attempt, False), due))
        self.notes.append(f"{sd.name} waits for signal {sd.signal!r}")

    def run_step(self, i: int, attempt: int) -> None:
        sd = self.d.steps[i]
        self.current = self.d.stages[self.d.stage_of(i)].start
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
        if self.status not in FORWARD or (self.status == Status.STARTED and self.current > 0):
            self.status = Status.PENDING

    def step_succeeded(self, i: int, result: dict[str, str]) -> None:
        self.cancel_step_timers(i)
        self.set_step(i, status=StepStatus.COMPLETED, result=result, error="")
        stage = self.stage()
        if any(self.steps[j].status not in DONE for j in stage):
            waiting = [self.d.steps[j].name for j in stage if self.steps[j].status not in DONE]
            self.notes.append(f"{self.d.steps[i].name} done; waiting for {', '.join(waiting)}")
            return
        self.begin_stage(self.d.stage_of(i) + 1)

    def step_failed(self, i: int, reason: str, retryable: bool, timed_out: bool) -> None:
        sd, s = self.d.steps[i], self.steps[i]
        self.cancel_step_timers(i)
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
        self.stop_stage(f"{sd.name} failed")
        self.compensate_next()

    def stop_stage(self, why: str) -> None:
        """The saga gives up on its current stage: every branch still at work stops. A branch
        whose command is in flight may still run, so it will be compensated; a branch waiting
        for its retry keeps what it knows (its last attempt failed, or may have run)."""
        for j in self.stage():
            s = self.steps[j]
            if s.status not in IN_FLIGHT:
                continue
            self.cancel_step_timers(j)
            self.set_step(
                j,
                status=StepStatus.FAILED,
                error=why,
                may_have_run=s.may_have_run or s.status == StepStatus.RUNNING,
            )

    # ---- backward ----
    def needs_compensation(self, i: int) -> bool:
        s = self.steps[i]
        if self.d.steps[i].is_wait:
            return False
        return s.status == StepStatus.COMPLETED or (s.status in MAY_HAVE_RUN and s.may_have_run)

    def compensate_next(self) -> None:
        """Start the next stage's compensations (highest stage first), or finish as failed."""
        if any(s.status == StepStatus.COMPENSATION_FAILED for s in self.steps):
            # another branch's compensation gave up: a person acts before anything goes on
            self.status = Status.NEEDS_INTERVENTION
            return
        self.status = Status.COMPENSATING
        if any(s.status in IN_COMPENSATION for s in self.steps):
            return
        for stage in reversed(self.d.stages):
            todo = [i for i in stage if self.needs_compensation(i)]
            if todo:
                for i in todo:
                    self.run_compensation(i, self.steps[i].compensation_attempts + 1)
                return
        self.status = Status.FAILED
        self.notes.append("compensation finished")

    def run_compensation(self, i: int, attempt: int) -> None:
        sd, s = self.d.steps[i], self.steps[i]
        self.set_step(i, status=StepStatus.COMPENSATING, compensation_attempts=attempt)
        # While another branch's compensation has given up, the saga stays with a person: this
        # one (its retry, say) still runs, but it does not make the saga `compensating` again.
        # `resume` re-sends every stuck compensation, so after it none has given up.
        gave_up = any(x.status == StepStatus.COMPENSATION_FAILED for x in self.steps)
        self.status = Status.NEEDS_INTERVENTION if gave_up else Status.COMPENSATING
        cid = command_id(self.before.saga_id, sd.name, True, attempt)
        self.commands.append(
            Command(cid, sd.participant, sd.compensation, sd.name, attempt, True, s.result)
        )
        due = self.now + int(sd.compensation_timeout_s * 1000)
        self.timers.append(Timer(self._member("timeout", i, attempt, True), due))

    def compensation_failed(self, i: int, reason: str, retryable: bool) -> None:
        sd, s = self.d.steps[i], self.steps[i]
        self.cancel_compensation_timers(i)
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
