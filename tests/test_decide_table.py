"""Table tests of the pure saga core: every saga status x every input kind, and determinism.

States are built by walking the order fulfillment saga through `decide` itself, so the rows only
name the state, the input and what must come out of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from orchestrator.core.decide import decide
from orchestrator.core.model import (
    Reply,
    Status,
    StepStatus,
)
from tests.support.decide_walk import (
    REG,
    C,
    Cmd,
    D,
    P,
    R,
    S,
    act,
    build,
    check_timer_dues,
    cmds,
    comp_fail,
    comp_ok,
    crty,
    ctmo,
    due,
    fail,
    ok,
    op,
    rty,
    start,
    tmo,
    undo,
)

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
