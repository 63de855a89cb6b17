"""Property tests of the pure saga core: random inputs never break the saga's invariants.

A small simulated world drives `decide`: a fake clock, the timer set as the store keeps it
(timers added, then cancellations removed, as step.lua does), participants that answer each
command once and repeat that answer on redelivery, operators, duplicates and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry, RetryPolicy, SagaDefinition, StepDef
from orchestrator.core.model import (
    FORWARD,
    Command,
    Event,
    Operator,
    Reply,
    SagaState,
    Signal,
    Start,
    Status,
    StepStatus,
    TimerDue,
    Transition,
    parse_timer_member,
)
from participants.samples.order.saga import ORDER_FULFILLMENT
from tests.support.decide_walk import FLOW

SID = "order-9"
T0 = 1_700_000_000_000
ONE_SHOT = RetryPolicy(max_attempts=1)
#: a second saga type with no retries at all, so exhaustion paths are hit at once
TERSE = SagaDefinition(
    "terse",
    1,
    (
        StepDef("a", "pa", "DoA", "UndoA", timeout_s=5, retry=ONE_SHOT,
                compensation_retry=RetryPolicy(max_attempts=2, max_backoff_s=1)),
        StepDef("b", "pb", "DoB", "UndoB", timeout_s=5, retry=ONE_SHOT,
                compensation_retry=RetryPolicy(max_attempts=2, max_backoff_s=1)),
    ),
)  # fmt: skip
SIGNALS = ["go", "stop", "approve", "no", "bogus"]
REG = Registry([ORDER_FULFILLMENT, TERSE, FLOW])
FINISHED = {Status.COMPLETED, Status.FAILED, Status.NEEDS_INTERVENTION}
UNDONE = {StepStatus.COMPENSATED, StepStatus.COMPENSATION_SKIPPED}


@dataclass
class World:
    """One saga, its timers, the participants' answers and what the invariants need to know."""

    d: SagaDefinition
    state: SagaState | None = None
    now: int = T0
    timers: dict[str, int] = field(default_factory=dict)
    issued: list[Command] = field(default_factory=list)
    answers: dict[str, Reply] = field(default_factory=dict)  # command id -> the one answer
    delivered: list[Event] = field(default_factory=list)
    applied: int = 0
    compensated_steps: list[str] = field(default_factory=list)  # first compensation, in order
    late: set[str] = field(default_factory=set)  # completed after the saga gave up on them
    did_run: set[str] = field(default_factory=set)  # a participant said it completed

    @property
    def s(self) -> SagaState:
        assert self.state is not None
        return self.state

    def names(self) -> list[str]:
        return [s.name for s in self.d.steps]

    # ---- delivering one input and checking the invariants ----
    def deliver(self, event: Event) -> Transition:
        before = self.state
        t = decide(before, event, self.now, REG)
        self.delivered.append(event)
        assert t.outcome != "rejected", t.note
        if t.outcome == "ignored":
            assert t.state is before and not (t.commands or t.timers or t.cancel_timers)
            return t
        assert t.state is not None
        assert t.state.version == (before.version if before else 0) + 1, "version +1 per step"
        self.applied += 1
        set_now = {x.member for x in t.timers}
        assert not set_now & set(t.cancel_timers), "a timer both set and cancelled"
        for x in t.timers:  # step.lua: ZADD first, then ZREM
            self.timers[x.member] = x.due_ms
        for m in t.cancel_timers:
            self.timers.pop(m, None)
        if (
            isinstance(event, Reply)
            and event.kind == "completed"
            and not event.compensation
            and before is not None
            and before.status not in FORWARD
        ):
            self.late.add(event.step)
        # while a compensation has given up, earlier stages wait for a person: the other
        # branches' compensations may go again (a retry), but none begins
        gave_up = any(x.status == StepStatus.COMPENSATION_FAILED for x in t.state.steps)
        for c in t.commands:
            if gave_up and c.compensation:
                assert c.step in self.compensated_steps, f"{c.step} undone while one gave up"
            self.check_command(c)
            self.issued.append(c)
        self.state = t.state
        self.check_state()
        return t

    def stage(self, step: str) -> int:
        """The step's stage (for a straight line, its index)."""
        return self.d.stage_of(self.names().index(step))

    def check_command(self, c: Command) -> None:
        if not c.compensation:
            assert c.step not in self.compensated_steps, f"{c.step} runs after its compensation"
            return
        sd = self.d.steps[self.names().index(c.step)]
        assert not sd.is_wait, f"wait step {c.step} compensated"
        assert self.state is None or self.state.steps[self.names().index(c.step)].status != (
            StepStatus.SKIPPED
        ), f"skipped step {c.step} compensated"
        assert any(x.step == c.step and not x.compensation for x in self.issued), (
            f"{c.step} compensated but never started"
        )
        if c.step in self.compensated_steps:
            return  # a retry of the same compensation
        if c.step not in self.late:
            # stage by stage, backwards: a parallel stage's branches go out together
            earlier = [self.stage(n) for n in self.compensated_steps if n not in self.late]
            assert all(self.stage(c.step) <= k for k in earlier), (
                f"compensation of {c.step} after {self.compensated_steps}"
            )
        self.compensated_steps.append(c.step)

    def check_state(self) -> None:
        s = self.s
        if s.status == Status.COMPLETED:
            assert all(x.status in (StepStatus.COMPLETED, StepStatus.SKIPPED) for x in s.steps)
            assert not self.compensated_steps, "a completed saga compensated something"
        if s.status in FORWARD:
            # the current stage is the only one at work; no step after it has started
            stage = self.d.stage_of(s.current_step)
            assert self.d.stages[stage].start == s.current_step
            for i, x in enumerate(s.steps):
                if self.d.stage_of(i) > stage:
                    assert x.status == StepStatus.PENDING, f"{self.names()[i]} is {x.status}"
        else:
            # giving up on the forward path stops every branch at work
            busy = (StepStatus.RUNNING, StepStatus.RETRY_WAIT, StepStatus.WAITING)
            assert not [x for x in s.steps if x.status in busy], f"{s.status} with {s.steps}"
        if any(x.status == StepStatus.COMPENSATION_FAILED for x in s.steps):
            assert s.status == Status.NEEDS_INTERVENTION, "a compensation gave up unnoticed"
        if s.status == Status.FAILED:
            for sd, x in zip(self.d.steps, s.steps, strict=True):
                name = sd.name
                if sd.is_wait:
                    assert x.status != StepStatus.WAITING, f"{name} still waits"
                    continue  # an approval has nothing to undo
                assert x.status != StepStatus.COMPLETED, f"{name} completed and not undone"
                if x.may_have_run or name in self.did_run or name in self.maybe_ran():
                    assert x.status in UNDONE, f"{name} may have run but is {x.status}"

    def maybe_ran(self) -> set[str]:
        """Steps with a forward attempt that the participant did not answer 'failed'."""
        out = set()
        for c in self.issued:
            answer = self.answers.get(c.command_id)
            if not c.compensation and (answer is None or answer.kind != "failed"):
                out.add(c.step)
        return out

    # ---- the world's moves ----
    def reply(self, back: int, choice: int) -> None:
        if not self.issued:
            return
        c = self.issued[-1 - back % len(self.issued)]
        answer = self.answers.get(c.command_id)
        if answer is None:
            kinds = ("compensated" if c.compensation else "completed", "failed", "failed")
            kind = kinds[choice % 3]
            answer = Reply(
                kind,  # type: ignore[arg-type]
                c.step,
                c.attempt,
                compensation=c.compensation,
                result={"ref": c.command_id} if kind == "completed" else {},
                retryable=choice % 3 == 1,
                reason="boom",
                command_id=c.command_id,
            )
            self.answers[c.command_id] = answer
        if answer.kind == "completed":
            self.did_run.add(answer.step)
        self.deliver(answer)

    def progress(self, n: int) -> None:
        """Move the saga on: answer an unanswered command with success, or else give a waiting
        step the signal it waits for."""
        pending = [c for c in self.issued if c.command_id not in self.answers]
        if pending:
            c = pending[n % len(pending)]
            self.reply(len(self.issued) - 1 - self.issued.index(c), 0)
            return
        waits = [sd for sd, x in zip(self.d.steps, self.s.steps, strict=True)
                 if x.status == StepStatus.WAITING]  # fmt: skip
        if waits:
            sd = waits[n % len(waits)]
            self.deliver(Signal(sd.signal, f"sig-p{n}", {}, sender="hyp"))

    def fire_next(self) -> bool:
        """Jump the clock to the earliest timer and deliver it, as the relay would."""
        if not self.timers:
            return False
        member = min(self.timers, key=lambda m: (self.timers[m], m))
        self.now = max(self.now, self.timers.pop(member))
        parsed = parse_timer_member(member)
        assert parsed is not None and parsed[0] == SID
        self.deliver(parsed[1])
        return True

    def advance(self, ms: int) -> None:
        self.now += ms
        while self.timers and min(self.timers.values()) <= self.now:
            self.fire_next()


@st.composite
def moves(draw: st.DrawFn, names: list[str]) -> tuple[object, ...]:
    step = st.sampled_from(names)
    return draw(
        st.one_of(
            st.tuples(st.just("reply"), st.integers(0, 6), st.integers(0, 2)),
            st.tuples(st.just("reply"), st.integers(0, 6), st.integers(0, 2)),
            st.tuples(st.just("fire")),
            st.tuples(st.just("advance"), st.integers(0, 40_000)),
            st.tuples(
                st.just("operator"),
                st.sampled_from(["retry", "abort", "resume", "skip_compensation"]),
                st.one_of(st.none(), step),
            ),
            st.tuples(st.just("duplicate"), st.integers(0, 50)),
            st.tuples(st.just("signal"), st.sampled_from(SIGNALS), st.integers(0, 3)),
            # noise: answers nobody asked for (attempt 0 never matches a live attempt)
            st.tuples(
                st.just("noise-reply"),
                st.sampled_from(["failed", "compensated", "completed"]),
                st.booleans(),
                step,
            ),
            st.tuples(
                st.just("noise-timer"),
                st.sampled_from(["timeout", "retry"]),
                step,
                st.integers(0, 4),
                st.booleans(),
            ),
        )
    )


def play(w: World, move: tuple[object, ...]) -> None:
    kind = move[0]
    if kind == "reply":
        w.reply(int(move[1]), int(move[2]))  # type: ignore[call-overload]
    elif kind == "fire":
        w.fire_next()
    elif kind == "advance":
        w.advance(int(move[1]))  # type: ignore[call-overload]
    elif kind == "operator":
        w.deliver(Operator(move[1], move[2], reason="prop", operator="hyp"))  # type: ignore[arg-type]
    elif kind == "duplicate":
        w.deliver(w.delivered[int(move[1]) % len(w.delivered)])  # type: ignore[call-overload]
    elif kind == "progress":
        w.progress(int(move[1]))  # type: ignore[call-overload]
    elif kind == "signal":
        _, name, n = move
        w.deliver(Signal(str(name), f"sig-{n}", {"n": n}, sender="hyp"))
    elif kind == "noise-reply":
        _, rkind, comp, step = move
        if rkind == "completed" and not comp:
            return  # a forward success for an attempt never sent is not something we model
        w.deliver(Reply(rkind, step, 0, compensation=comp, reason="noise"))  # type: ignore[arg-type]
    else:
        _, tkind, step, attempt, comp = move
        w.deliver(TimerDue(tkind, step, attempt, comp))  # type: ignore[arg-type]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, list[tuple[object, ...]]]:
    d = draw(st.sampled_from([ORDER_FULFILLMENT, TERSE, FLOW]))
    w = World(d)
    data: dict[str, object] = {"order_id": "o-9"}
    data["amount"] = draw(st.sampled_from([50, 200, 800, 5000, "5000", None]))
    if draw(st.booleans()):
        data["vip"] = draw(st.sampled_from([True, False, "yes"]))
    w.deliver(Start(SID, d.name, data))
    plan = draw(st.lists(moves([s.name for s in d.steps]), max_size=60))
    return w, plan


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(worlds())
def test_random_inputs_keep_every_invariant(world: tuple[World, list[tuple[object, ...]]]) -> None:
    """Any mix of replies, timers, operators, duplicates and noise never raises or breaks one."""
    w, plan = world
    for move in plan:
        play(w, move)
    assert w.s.version == w.applied


@PROPS
@given(worlds())
def test_nothing_is_lost_when_participants_go_silent(
    world: tuple[World, list[tuple[object, ...]]],
) -> None:
    """From any reachable state, firing due timers alone ends the saga: done, failed or a person."""
    w, plan = world
    for move in plan:
        play(w, move)
    for _ in range(200):
        if w.s.status in FINISHED:
            break
        assert w.fire_next(), f"stuck in {w.s.status} with no timer: {w.s.steps}"
    assert w.s.status in FINISHED, w.s


@PROPS
@given(worlds())
def test_nothing_is_lost_when_participants_answer_everything(
    world: tuple[World, list[tuple[object, ...]]],
) -> None:
    """If every command is eventually answered (and timers fire), the saga always finishes."""
    w, plan = world
    for move in plan:
        play(w, move)
    for i in range(500):
        if w.s.status in FINISHED:
            break
        pending = [c for c in w.issued if c.command_id not in w.answers]
        if pending and i % 2 == 0:
            w.reply(w.issued[::-1].index(pending[-1]), i // 2)
        else:
            assert w.fire_next() or pending, f"stuck in {w.s.status}"
    assert w.s.status in FINISHED, w.s


# ---- workflows (issue 13): runs that go deep into FLOW -----------------------------------------


@st.composite
def flow_worlds(draw: st.DrawFn) -> tuple[World, list[tuple[object, ...]]]:
    """FLOW only, with data that mostly reaches its waits and participants and people who
    mostly say yes, so runs get deep: stages passed, approvals given, then failures, late
    branches and compensations stage by stage."""
    w = World(FLOW)
    data: dict[str, object] = {
        "amount": draw(st.sampled_from([5000, 5000, 5000, 800, 200, "5000"]))
    }
    if draw(st.integers(0, 3)) == 0:
        data["vip"] = draw(st.sampled_from([True, "yes"]))
    w.deliver(Start(SID, FLOW.name, data))
    names = w.names()
    progress = st.tuples(st.just("progress"), st.integers(0, 5))
    friendly = st.one_of(moves(names), *[progress] * 5)
    return w, draw(st.lists(friendly, min_size=10, max_size=60))


@PROPS
@given(flow_worlds())
def test_workflow_runs_keep_every_invariant(world: tuple[World, list[tuple[object, ...]]]) -> None:
    """Parallel stages, conditions and waits under any inputs: no invariant breaks, no wait or
    skipped step is ever compensated, compensation goes stage by stage."""
    w, plan = world
    for move in plan:
        play(w, move)
    assert w.s.version == w.applied


@PROPS
@given(flow_worlds())
def test_workflow_runs_end_when_everyone_goes_silent(
    world: tuple[World, list[tuple[object, ...]]],
) -> None:
    """Waits time out like commands do: firing timers alone ends every workflow."""
    w, plan = world
    for move in plan:
        play(w, move)
    for _ in range(300):
        if w.s.status in FINISHED:
            break
        assert w.fire_next(), f"stuck in {w.s.status} with no timer: {w.s.steps}"
    assert w.s.status in FINISHED, w.s
