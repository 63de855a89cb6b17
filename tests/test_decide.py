"""Table tests of the pure saga core: every saga status x every input kind, then the scenarios.

States are built by walking the order fulfillment saga through `decide` itself, so the rows only
name the state, the input and what must come out of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from orchestrator.core.decide import decide
from orchestrator.core.definition import (
    ORDER_FULFILLMENT,
    Registry,
    RetryPolicy,
    SagaDefinition,
    StepDef,
    default_registry,
)
from orchestrator.core.model import (
    Event,
    Operator,
    Reply,
    SagaState,
    Start,
    Status,
    StepStatus,
    TimerDue,
    Transition,
    command_id,
    parse_timer_member,
    timer_member,
)

SID = "order-1"
TYPE = "order_fulfillment"
DATA = {"order_id": "o-1", "amount": "42.00"}
T0 = 1_700_000_000_000
REG = default_registry()
D = ORDER_FULFILLMENT

R, P, S, C = (s.name for s in D.steps)  # reserve_inventory ... send_confirmation
NAMES = (R, P, S, C)
SD = {s.name: s for s in D.steps}


# ---- helpers: events ---------------------------------------------------------------------------


def result_of(step: str, attempt: int) -> dict[str, str]:
    return {"ref": f"{step}-{attempt}"}


def start(saga_id: str = SID, saga_type: str = TYPE) -> Start:
    return Start(saga_id, saga_type, dict(DATA))


def ok(step: str, attempt: int = 1) -> Reply:
    return Reply("completed", step, attempt, result=result_of(step, attempt))


def fail(step: str, attempt: int = 1, retryable: bool = False) -> Reply:
    return Reply("failed", step, attempt, retryable=retryable, reason="boom")


def comp_ok(step: str, attempt: int = 1) -> Reply:
    return Reply("compensated", step, attempt, compensation=True)


def comp_fail(step: str, attempt: int = 1, retryable: bool = False) -> Reply:
    return Reply("failed", step, attempt, compensation=True, retryable=retryable, reason="nope")


def due(kind: str, step: str, attempt: int, compensation: bool = False) -> TimerDue:
    return TimerDue(kind, step, attempt, compensation)  # type: ignore[arg-type]


def op(action: str, step: str | None = None) -> Operator:
    return Operator(action, step, reason="ticket 7", operator="ada")  # type: ignore[arg-type]


# ---- helpers: expected outputs -----------------------------------------------------------------

Cmd = tuple[str, str, int, bool]  # (command_type, step, attempt, compensation)


def act(step: str, attempt: int) -> Cmd:
    return (SD[step].action, step, attempt, False)


def undo(step: str, attempt: int) -> Cmd:
    return (SD[step].compensation, step, attempt, True)


def tmo(step: str, attempt: int) -> str:
    return timer_member(SID, "timeout", step, attempt, False)


def rty(step: str, attempt: int) -> str:
    return timer_member(SID, "retry", step, attempt, False)


def ctmo(step: str, attempt: int) -> str:
    return timer_member(SID, "timeout", step, attempt, True)


def crty(step: str, attempt: int) -> str:
    return timer_member(SID, "retry", step, attempt, True)


def cmds(t: Transition) -> list[Cmd]:
    return [(c.command_type, c.step, c.attempt, c.compensation) for c in t.commands]


def check_timer_dues(t: Transition, now: int, d: SagaDefinition = D) -> None:
    """Timeouts are due exactly after the step's timeout; retries within the jitter bounds."""
    for timer in t.timers:
        parsed = parse_timer_member(timer.member)
        assert parsed is not None
        _, td = parsed
        sd = d.steps[d.index(td.step)]  # type: ignore[index]
        if td.kind == "timeout":
            limit = sd.compensation_timeout_s if td.compensation else sd.timeout_s
            assert timer.due_ms == now + int(limit * 1000)
        else:
            policy = sd.compensation_retry if td.compensation else sd.retry
            lo, hi = backoff_bounds_ms(policy, td.attempt - 1)
            assert now + lo <= timer.due_ms <= now + hi, (timer, lo, hi)


def backoff_bounds_ms(policy: RetryPolicy, failed_attempt: int) -> tuple[int, int]:
    base = min(
        policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (failed_attempt - 1)
    )
    lo = max(0.0, base * (1 - policy.jitter))
    hi = min(policy.max_backoff_s, base * (1 + policy.jitter))
    return int(lo * 1000) - 1, int(hi * 1000) + 1


# ---- helpers: walking a saga -------------------------------------------------------------------


@dataclass
class Walk:
    """A saga driven through `decide` with a fake clock; keeps every transition."""

    registry: Registry = field(default_factory=lambda: REG)
    state: SagaState | None = None
    now: int = T0
    log: list[Transition] = field(default_factory=list)

    def send(self, event: Event, dt: int = 1000) -> Transition:
        self.now += dt
        t = decide(self.state, event, self.now, self.registry)
        if t.outcome == "applied":
            self.state = t.state
        self.log.append(t)
        return t

    def run(self, *events: Event) -> Walk:
        for e in events:
            t = self.send(e)
            assert t.outcome == "applied", t.note
        return self

    def commands(self) -> list[Cmd]:
        return [c for t in self.log for c in cmds(t)]

    @property
    def s(self) -> SagaState:
        assert self.state is not None
        return self.state

    def step(self, name: str) -> StepStatus:
        return self.s.steps[D.index(name)].status  # type: ignore[index]


def second_attempt(step: str) -> tuple[Event, Event]:
    """The step's first attempt fails retryably and its retry timer fires: attempt 2 runs."""
    return fail(step, 1, retryable=True), due("retry", step, 2)


def second_compensation(step: str) -> tuple[Event, Event]:
    return comp_fail(step, 1, retryable=True), due("retry", step, 2, compensation=True)


def shipment_failed() -> Walk:
    """R and P done; S fails non-retryably on its second attempt: P's compensation runs."""
    return Walk().run(start(), ok(R), ok(P), *second_attempt(S), fail(S, 2))


def build(name: str) -> Walk:
    """The canonical state of each status, with the step in play on its second attempt."""
    if name == "started":
        return Walk().run(start(), *second_attempt(R))
    if name == "pending":
        return Walk().run(start(), ok(R), *second_attempt(P))
    if name == "completed":
        return Walk().run(start(), ok(R), ok(P), ok(S), *second_attempt(C), ok(C, 2))
    if name == "compensating":
        return shipment_failed().run(*second_compensation(P))
    if name == "needs_intervention":
        return shipment_failed().run(*second_compensation(P), comp_fail(P, 2))
    if name == "failed":
        w = shipment_failed().run(*second_compensation(P), comp_ok(P, 2))
        return w.run(*second_compensation(R), comp_ok(R, 2))
    raise AssertionError(name)


# ---- the state x event table ------------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    """Which steps the generic inputs name in a given state (all in play at attempt 2)."""

    fwd: str  # the forward step the saga is on (or failed at / finished with)
    stale: str  # another step whose forward replies are stale
    comp: str  # the step whose compensation is in play (or would be)
    comp_stale: str  # another step whose compensation replies are stale


ROLES = {
    "started": Roles(R, P, R, P),
    "pending": Roles(P, R, P, R),
    "compensating": Roles(S, R, P, R),
    "completed": Roles(C, R, C, R),
    "failed": Roles(S, R, R, P),
    "needs_intervention": Roles(S, R, P, R),
}

EVENTS = {
    "start": lambda r: start(),
    "completed": lambda r: ok(r.fwd, 2),
    "completed/stale-step": lambda r: ok(r.stale, 1),
    "completed/stale-attempt": lambda r: ok(r.fwd, 1),
    "failed-retryable": lambda r: fail(r.fwd, 2, retryable=True),
    "failed-retryable/stale-step": lambda r: fail(r.stale, 1, retryable=True),
    "failed-retryable/stale-attempt": lambda r: fail(r.fwd, 1, retryable=True),
    "failed-final": lambda r: fail(r.fwd, 2),
    "failed-final/stale-step": lambda r: fail(r.stale, 1),
    "failed-final/stale-attempt": lambda r: fail(r.fwd, 1),
    "compensated/forward-side": lambda r: Reply("compensated", r.fwd, 2),
    "comp-compensated": lambda r: comp_ok(r.comp, 2),
    "comp-compensated/stale-step": lambda r: comp_ok(r.comp_stale, 1),
    "comp-compensated/stale-attempt": lambda r: comp_ok(r.comp, 1),
    "comp-failed-retryable": lambda r: comp_fail(r.comp, 2, retryable=True),
    "comp-failed-retryable/stale-step": lambda r: comp_fail(r.comp_stale, 1, retryable=True),
    "comp-failed-retryable/stale-attempt": lambda r: comp_fail(r.comp, 1, retryable=True),
    "comp-failed-final": lambda r: comp_fail(r.comp, 2),
    "comp-failed-final/stale-step": lambda r: comp_fail(r.comp_stale, 1),
    "comp-failed-final/stale-attempt": lambda r: comp_fail(r.comp, 1),
    "completed/compensation-side": lambda r: Reply("completed", r.comp, 2, compensation=True),
    "timeout": lambda r: due("timeout", r.fwd, 2),
    "timeout/stale": lambda r: due("timeout", r.fwd, 1),
    "retry-due": lambda r: due("retry", r.fwd, 3),
    "retry-due/stale": lambda r: due("retry", r.fwd, 2),
    "comp-timeout": lambda r: due("timeout", r.comp, 2, True),
    "comp-timeout/stale": lambda r: due("timeout", r.comp, 1, True),
    "comp-retry-due": lambda r: due("retry", r.comp, 3, True),
    "comp-retry-due/stale": lambda r: due("retry", r.comp, 2, True),
    "op-retry": lambda r: op("retry"),
    "op-abort": lambda r: op("abort"),
    "op-resume": lambda r: op("resume"),
    "op-skip-compensation": lambda r: op("skip_compensation"),
    "unknown-step": lambda r: ok("teleport", 1),
}


@dataclass(frozen=True)
class X:
    """Expected transition: outcome, new status, commands, timers set and cancelled, steps."""

    outcome: str
    status: Status | None = None
    cmds: tuple[Cmd, ...] = ()
    timers: tuple[str, ...] = ()
    cancels: tuple[str, ...] = ()
    steps: dict[str, StepStatus] = field(default_factory=dict)


IGN = X("ignored")
REJ = X("rejected")
st = StepStatus
ST, PE, CO, DONE, FA, NI = (
    Status.STARTED,
    Status.PENDING,
    Status.COMPENSATING,
    Status.COMPLETED,
    Status.FAILED,
    Status.NEEDS_INTERVENTION,
)

# fmt: off
TABLE: dict[str, dict[str, X]] = {
    "started": {
        "start": IGN,
        "completed": X(
            "applied", PE, (act(P, 1),), (tmo(P, 1),), (tmo(R, 2), rty(R, 3)),
            {R: st.COMPLETED, P: st.RUNNING},
        ),
        "completed/stale-step": IGN,
        # any attempt's completion means the step ran: the saga moves on
        "completed/stale-attempt": X(
            "applied", PE, (act(P, 1),), (tmo(P, 1),), (tmo(R, 2), rty(R, 3)),
            {R: st.COMPLETED, P: st.RUNNING},
        ),
        "failed-retryable": X("applied", ST, (), (rty(R, 3),), (tmo(R, 2),), {R: st.RETRY_WAIT}),
        "failed-retryable/stale-step": IGN,
        "failed-retryable/stale-attempt": IGN,
        # nothing finished, nothing may have run: straight to failed
        "failed-final": X("applied", FA, (), (), (tmo(R, 2), rty(R, 3)), {R: st.FAILED}),
        "failed-final/stale-step": IGN,
        "failed-final/stale-attempt": IGN,
        "compensated/forward-side": IGN,
        "comp-compensated": IGN,
        "comp-compensated/stale-step": IGN,
        "comp-compensated/stale-attempt": IGN,
        "comp-failed-retryable": IGN,
        "comp-failed-retryable/stale-step": IGN,
        "comp-failed-retryable/stale-attempt": IGN,
        "comp-failed-final": IGN,
        "comp-failed-final/stale-step": IGN,
        "comp-failed-final/stale-attempt": IGN,
        "completed/compensation-side": IGN,
        "timeout": X("applied", ST, (), (rty(R, 3),), (tmo(R, 2),), {R: st.RETRY_WAIT}),
        "timeout/stale": IGN,
        "retry-due": IGN,
        "retry-due/stale": IGN,
        "comp-timeout": IGN,
        "comp-timeout/stale": IGN,
        "comp-retry-due": IGN,
        "comp-retry-due/stale": IGN,
        "op-retry": X("applied", ST, (act(R, 3),), (tmo(R, 3),), (tmo(R, 2), rty(R, 3)),
                      {R: st.RUNNING}),
        # the in-flight attempt may still run: it is compensated
        "op-abort": X("applied", CO, (undo(R, 1),), (ctmo(R, 1),), (tmo(R, 2), rty(R, 3)),
                      {R: st.COMPENSATING}),
        "op-resume": IGN,
        "op-skip-compensation": IGN,
        "unknown-step": REJ,
    },
    "pending": {
        "start": IGN,
        "completed": X(
            "applied", PE, (act(S, 1),), (tmo(S, 1),), (tmo(P, 2), rty(P, 3)),
            {R: st.COMPLETED, P: st.COMPLETED, S: st.RUNNING},
        ),
        "completed/stale-step": IGN,
        "completed/stale-attempt": X(
            "applied", PE, (act(S, 1),), (tmo(S, 1),), (tmo(P, 2), rty(P, 3)),
            {P: st.COMPLETED, S: st.RUNNING},
        ),
        "failed-retryable": X("applied", PE, (), (rty(P, 3),), (tmo(P, 2),), {P: st.RETRY_WAIT}),
        "failed-retryable/stale-step": IGN,
        "failed-retryable/stale-attempt": IGN,
        "failed-final": X(
            "applied", CO, (undo(R, 1),), (ctmo(R, 1),), (tmo(P, 2), rty(P, 3)),
            {R: st.COMPENSATING, P: st.FAILED},
        ),
        "failed-final/stale-step": IGN,
        "failed-final/stale-attempt": IGN,
        "compensated/forward-side": IGN,
        "comp-compensated": IGN,
        "comp-compensated/stale-step": IGN,
        "comp-compensated/stale-attempt": IGN,
        "comp-failed-retryable": IGN,
        "comp-failed-retryable/stale-step": IGN,
        "comp-failed-retryable/stale-attempt": IGN,
        "comp-failed-final": IGN,
        "comp-failed-final/stale-step": IGN,
        "comp-failed-final/stale-attempt": IGN,
        "completed/compensation-side": IGN,
        "timeout": X("applied", PE, (), (rty(P, 3),), (tmo(P, 2),), {P: st.RETRY_WAIT}),
        "timeout/stale": IGN,
        "retry-due": IGN,
        "retry-due/stale": IGN,
        "comp-timeout": IGN,
        "comp-timeout/stale": IGN,
        "comp-retry-due": IGN,
        "comp-retry-due/stale": IGN,
        "op-retry": X("applied", PE, (act(P, 3),), (tmo(P, 3),), (tmo(P, 2), rty(P, 3)),
                      {P: st.RUNNING}),
        # the in-flight step is compensated first, then the finished one
        "op-abort": X("applied", CO, (undo(P, 1),), (ctmo(P, 1),), (tmo(P, 2), rty(P, 3)),
                      {R: st.COMPLETED, P: st.COMPENSATING}),
        "op-resume": IGN,
        "op-skip-compensation": IGN,
        "unknown-step": REJ,
    },
    "compensating": {
        "start": IGN,
        # a late completion is recorded; it is compensated once P's compensation is done
        "completed": X("applied", CO, steps={S: st.COMPLETED, P: st.COMPENSATING}),
        "completed/stale-step": IGN,
        "completed/stale-attempt": X("applied", CO, steps={S: st.COMPLETED}),
        "failed-retryable": IGN,
        "failed-retryable/stale-step": IGN,
        "failed-retryable/stale-attempt": IGN,
        "failed-final": IGN,
        "failed-final/stale-step": IGN,
        "failed-final/stale-attempt": IGN,
        "compensated/forward-side": IGN,
        "comp-compensated": X(
            "applied", CO, (undo(R, 1),), (ctmo(R, 1),), (ctmo(P, 2), crty(P, 3)),
            {P: st.COMPENSATED, R: st.COMPENSATING, S: st.FAILED},
        ),
        "comp-compensated/stale-step": IGN,
        # any compensation attempt that succeeded undid the step
        "comp-compensated/stale-attempt": X(
            "applied", CO, (undo(R, 1),), (ctmo(R, 1),), (ctmo(P, 2), crty(P, 3)),
            {P: st.COMPENSATED, R: st.COMPENSATING},
        ),
        "comp-failed-retryable": X(
            "applied", CO, (), (crty(P, 3),), (ctmo(P, 2),), {P: st.COMPENSATION_WAIT}
        ),
        "comp-failed-retryable/stale-step": IGN,
        "comp-failed-retryable/stale-attempt": IGN,
        "comp-failed-final": X(
            "applied", NI, (), (), (ctmo(P, 2), crty(P, 3)), {P: st.COMPENSATION_FAILED}
        ),
        "comp-failed-final/stale-step": IGN,
        "comp-failed-final/stale-attempt": IGN,
        "completed/compensation-side": IGN,
        "timeout": IGN,
        "timeout/stale": IGN,
        "retry-due": IGN,
        "retry-due/stale": IGN,
        "comp-timeout": X(
            "applied", CO, (), (crty(P, 3),), (ctmo(P, 2),), {P: st.COMPENSATION_WAIT}
        ),
        "comp-timeout/stale": IGN,
        "comp-retry-due": IGN,
        "comp-retry-due/stale": IGN,
        "op-retry": X("applied", CO, (undo(P, 3),), (ctmo(P, 3),), (ctmo(P, 2), crty(P, 3)),
                      {P: st.COMPENSATING}),
        "op-abort": IGN,
        "op-resume": X("applied", CO, (undo(P, 3),), (ctmo(P, 3),), (ctmo(P, 2), crty(P, 3)),
                       {P: st.COMPENSATING}),
        "op-skip-compensation": X(
            "applied", CO, (undo(R, 1),), (ctmo(R, 1),), (ctmo(P, 2), crty(P, 3)),
            {P: st.COMPENSATION_SKIPPED, R: st.COMPENSATING},
        ),
        "unknown-step": REJ,
    },
    "completed": {
        "start": IGN,
        **{k: IGN for k in EVENTS if k not in ("start", "unknown-step")},
        "unknown-step": REJ,
    },
    "failed": {
        "start": IGN,
        # it ran after all: the saga reopens to compensate it
        "completed": X("applied", CO, (undo(S, 1),), (ctmo(S, 1),), (),
                       {S: st.COMPENSATING, P: st.COMPENSATED, R: st.COMPENSATED}),
        "completed/stale-step": IGN,
        "completed/stale-attempt": X("applied", CO, (undo(S, 1),), (ctmo(S, 1),), (),
                                     {S: st.COMPENSATING}),
        "failed-retryable": IGN,
        "failed-retryable/stale-step": IGN,
        "failed-retryable/stale-attempt": IGN,
        "failed-final": IGN,
        "failed-final/stale-step": IGN,
        "failed-final/stale-attempt": IGN,
        "compensated/forward-side": IGN,
        "comp-compensated": IGN,
        "comp-compensated/stale-step": IGN,
        "comp-compensated/stale-attempt": IGN,
        "comp-failed-retryable": IGN,
        "comp-failed-retryable/stale-step": IGN,
        "comp-failed-retryable/stale-attempt": IGN,
        "comp-failed-final": IGN,
        "comp-failed-final/stale-step": IGN,
        "comp-failed-final/stale-attempt": IGN,
        "completed/compensation-side": IGN,
        "timeout": IGN,
        "timeout/stale": IGN,
        "retry-due": IGN,
        "retry-due/stale": IGN,
        "comp-timeout": IGN,
        "comp-timeout/stale": IGN,
        "comp-retry-due": IGN,
        "comp-retry-due/stale": IGN,
        "op-retry": IGN,
        "op-abort": IGN,
        "op-resume": IGN,
        "op-skip-compensation": IGN,
        "unknown-step": REJ,
    },
    "needs_intervention": {
        "start": IGN,
        # recorded now; compensated once a person lets compensation continue
        "completed": X("applied", NI, steps={S: st.COMPLETED, P: st.COMPENSATION_FAILED}),
        "completed/stale-step": IGN,
        "completed/stale-attempt": X("applied", NI, steps={S: st.COMPLETED}),
        "failed-retryable": IGN,
        "failed-retryable/stale-step": IGN,
        "failed-retryable/stale-attempt": IGN,
        "failed-final": IGN,
        "failed-final/stale-step": IGN,
        "failed-final/stale-attempt": IGN,
        "compensated/forward-side": IGN,
        # a late success of the failed compensation lets the saga continue by itself
        "comp-compensated": X(
            "applied", CO, (undo(R, 1),), (ctmo(R, 1),), (ctmo(P, 2), crty(P, 3)),
            {P: st.COMPENSATED, R: st.COMPENSATING},
        ),
        "comp-compensated/stale-step": IGN,
        "comp-compensated/stale-attempt": X(
            "applied", CO, (undo(R, 1),), (ctmo(R, 1),), (ctmo(P, 2), crty(P, 3)),
            {P: st.COMPENSATED, R: st.COMPENSATING},
        ),
        "comp-failed-retryable": IGN,
        "comp-failed-retryable/stale-step": IGN,
        "comp-failed-retryable/stale-attempt": IGN,
        "comp-failed-final": IGN,
        "comp-failed-final/stale-step": IGN,
        "comp-failed-final/stale-attempt": IGN,
        "completed/compensation-side": IGN,
        "timeout": IGN,
        "timeout/stale": IGN,
        "retry-due": IGN,
        "retry-due/stale": IGN,
        "comp-timeout": IGN,
        "comp-timeout/stale": IGN,
        "comp-retry-due": IGN,
        "comp-retry-due/stale": IGN,
        "op-retry": X("applied", CO, (undo(P, 3),), (ctmo(P, 3),), (ctmo(P, 2), crty(P, 3)),
                      {P: st.COMPENSATING}),
        "op-abort": IGN,
        "op-resume": X("applied", CO, (undo(P, 3),), (ctmo(P, 3),), (ctmo(P, 2), crty(P, 3)),
                       {P: st.COMPENSATING}),
        "op-skip-compensation": X(
            "applied", CO, (undo(R, 1),), (ctmo(R, 1),), (ctmo(P, 2), crty(P, 3)),
            {P: st.COMPENSATION_SKIPPED, R: st.COMPENSATING},
        ),
        "unknown-step": REJ,
    },
}
# fmt: on

ROWS = [
    pytest.param(state, event, expected, id=f"{state}-x-{event}")
    for state, row in TABLE.items()
    for event, expected in row.items()
]


def test_table_covers_every_status_and_every_event() -> None:
    """The table has a row for every saga status x every input kind, no more, no less."""
    assert set(TABLE) == {s.value for s in Status}
    for state, row in TABLE.items():
        assert set(row) == set(EVENTS), state
    assert {build(s).s.status.value for s in TABLE} == set(TABLE)


@pytest.mark.parametrize(("state_name", "event_name", "x"), ROWS)
def test_decide_table(state_name: str, event_name: str, x: X) -> None:
    """One (state, input) pair gives exactly the expected outcome, status, commands and timers."""
    w = build(state_name)
    before = w.s
    now = w.now + 1000
    t = decide(before, EVENTS[event_name](ROLES[state_name]), now, REG)
    assert t.outcome == x.outcome, t.note
    if x.outcome == "rejected":
        assert t.state is None
    if x.outcome != "applied":
        assert t.commands == t.timers == t.cancel_timers == ()
        if x.outcome == "ignored":
            assert t.state is before
        return
    assert t.state is not None
    assert t.state.status == x.status
    assert t.state.version == before.version + 1
    assert t.state.updated_ms == now
    assert t.state.entered_ms == (now if x.status != before.status else before.entered_ms)
    assert cmds(t) == list(x.cmds)
    assert [tm.member for tm in t.timers] == list(x.timers)
    assert sorted(t.cancel_timers) == sorted(x.cancels)
    for name, status in x.steps.items():
        assert t.state.steps[D.index(name)].status == status, name  # type: ignore[index]
    check_timer_dues(t, now)


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


@pytest.mark.parametrize("state_name", list(TABLE))
@pytest.mark.parametrize("event_name", list(EVENTS))
def test_decide_is_deterministic(state_name: str, event_name: str) -> None:
    """The same (state, input, now) gives an identical Transition twice."""
    w = build(state_name)
    event = EVENTS[event_name](ROLES[state_name])
    assert decide(w.state, event, w.now + 7, REG) == decide(w.state, event, w.now + 7, REG)


def test_whole_walks_are_deterministic() -> None:
    """Two runs of the same inputs at the same times give identical transitions throughout."""
    a, b = build("failed"), build("failed")
    assert a.log == b.log
