"""The summary a completed saga is compacted to (statecodec.summary_fields) and its decoding,
without Redis (tests/test_compact.py runs it on Redis)."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry
from orchestrator.core.model import Event, Reply, SagaState, Start, Status, StepStatus, command_id
from orchestrator.engine.statecodec import (
    SUMMARY,
    from_fields,
    iso,
    logical_fields,
    summary_fields,
    to_fields,
)
from participants.samples.order.saga import ORDER_FULFILLMENT

D = ORDER_FULFILLMENT
REG = Registry([D])
STEPS = [s.name for s in D.steps]
T0 = 1_767_261_600_000


def ok(step: str) -> Reply:
    return Reply("completed", step, 1, result={"ref": step})


def completed() -> tuple[SagaState, list[dict[str, str]]]:
    """A completed order saga, one input every 250 ms, and its history entries."""
    state: SagaState | None = None
    history = []
    now = T0
    events: list[Event] = [Start("o-9", D.name, {"orderId": "o-9"}, "", "00-tp"), *map(ok, STEPS)]
    for e in events:
        if isinstance(e, Reply) and state is not None:
            e = replace(e, command_id=command_id("o-9", e.step, False, e.attempt))
        t = decide(state, e, now, REG)
        assert t.state is not None
        state = t.state
        history.append({"at": iso(now), "outcome": t.outcome, "note": t.note})
        now += 250
    assert state is not None and state.status == Status.COMPLETED
    return state, history


def test_the_summary_and_back() -> None:
    state, history = completed()
    f = summary_fields(to_fields(state, D), history)
    assert f is not None
    assert f[SUMMARY] == "completed@250 completed@500 completed@750 completed@1000"
    assert set(f) == {"type", "state", "version", "created_at", "updated_at", SUMMARY}
    back = from_fields(f, D, "o-9")
    assert [s.status for s in back.steps] == [StepStatus.COMPLETED] * 4
    assert (back.version, back.created_ms, back.updated_ms) == (5, T0, T0 + 1000)
    assert (back.data, back.traceparent, back.current_step) == ({}, "", len(STEPS) - 1)
    shown = logical_fields(f, D, "o-9")
    assert shown[f"step.{STEPS[0]}.status"] == "completed"
    assert shown["current_step"] == STEPS[-1]
    assert shown[SUMMARY] == f[SUMMARY]  # the step times stay visible
    # without the definition the steps cannot be named: the summary is shown as it stands
    assert not any(k.startswith("step.") for k in logical_fields(f, None, "o-9"))


def test_times_come_only_from_entries_that_name_the_step() -> None:
    state, _ = completed()
    noisy = [
        {"at": "garbage", "outcome": "applied", "note": f"completed {STEPS[0]}#1: x"},
        {"at": iso(T0 + 5), "outcome": "ignored", "note": f"completed {STEPS[1]}#1: late"},
        {"at": iso(T0 + 7), "outcome": "applied", "note": "completed nosuchstep#1: x"},
        {"at": iso(T0 + 9), "outcome": "applied", "note": "operator retry by ada"},
    ]
    f = summary_fields(to_fields(state, D), noisy)
    assert f is not None and f[SUMMARY] == " ".join(["completed"] * 4)


def test_what_has_no_summary() -> None:
    """Not completed, compacted already, an older layout, the tracker's, hand-edited."""
    state, history = completed()
    f = to_fields(state, D)
    summary = summary_fields(f, history)
    assert summary is not None
    for bad in (
        to_fields(replace(state, status=Status.PENDING), D),
        summary,
        f | {"saga_id": "o-9"},
        f | {"mode": "choreography"},
        f | {"created_at": "yesterday"},
        f | {"version": "five"},
        f | {f"step.{STEPS[2]}": "exploded"},
        {k: v for k, v in f.items() if k != "type"},
        {k: v for k, v in f.items() if not k.startswith("step.")},
        {},
    ):
        assert summary_fields(bad, history) is None, bad


def test_a_summary_that_does_not_fit_is_refused_on_decode() -> None:
    state, history = completed()
    f = summary_fields(to_fields(state, D), history)
    assert f is not None
    for steps in ("completed completed", "completed banana completed completed", ""):
        bad = f | {SUMMARY: steps}
        try:
            from_fields(bad, D, "o-9")
        except ValueError:
            pass
        else:
            raise AssertionError(f"decoded {steps!r}")
        assert logical_fields(bad, D, "o-9")[SUMMARY] == steps  # shown as it stands
