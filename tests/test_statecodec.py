"""SagaState <-> the plain-text fields of the saga's Redis hash (invariant 8, readable state)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry
from orchestrator.core.model import (
    Event,
    Operator,
    Reply,
    SagaState,
    Start,
    Status,
    StepStatus,
    TimerDue,
    command_id,
)
from orchestrator.engine.statecodec import from_fields, from_iso, iso, saga_type_of, to_fields
from participants.samples.order.saga import ORDER_FULFILLMENT

D = ORDER_FULFILLMENT
REG = Registry([ORDER_FULFILLMENT])
T0 = 1_700_000_000_123
R, P, S, C = (s.name for s in D.steps)


def walk(*events: Event) -> SagaState:
    state = None
    now = T0
    first = Start("order-7", D.name, {"order_id": "o-7", "items": [{"sku": "A", "qty": 2}]},
                  correlation_id="corr-7", traceparent="00-abc-def-01")  # fmt: skip
    for e in (first, *events):
        now += 1_337
        if isinstance(e, Reply) and state is not None:  # answers the command issued
            e = replace(e, command_id=command_id(state.saga_id, e.step, e.compensation, e.attempt))
        t = decide(state, e, now, REG)
        assert t.outcome == "applied", t.note
        state = t.state
    assert state is not None
    return state


def ok(step: str, attempt: int = 1) -> Reply:
    return Reply("completed", step, attempt, result={"ref": f"{step}/{attempt}", "note": "ü ✓"})


def comp_fail(step: str, attempt: int = 1, retryable: bool = False) -> Reply:
    return Reply("failed", step, attempt, compensation=True, retryable=retryable, reason="nope")


SCENARIOS = {
    "started": lambda: walk(),
    "pending-retry-wait": lambda: walk(ok(R), TimerDue("timeout", P, 1)),
    "completed": lambda: walk(ok(R), ok(P), ok(S), ok(C)),
    "compensating-after-abort": lambda: walk(ok(R), Operator("abort", reason="fraud")),
    "compensation-wait": lambda: walk(
        ok(R), Reply("failed", P, 1, reason="card declined"), comp_fail(R, 1, True)
    ),
    "needs-intervention": lambda: walk(ok(R), ok(P), Reply("failed", S, 1), comp_fail(P)),
    "retried-by-hand": lambda: walk(
        ok(R), ok(P), Reply("failed", S, 1), comp_fail(P), Operator("resume")
    ),
    "skipped-by-hand": lambda: walk(
        *(ok(R), ok(P), Reply("failed", S, 1), comp_fail(P)),
        Operator("skip_compensation", P, reason="refunded by phone"),
    ),
    "failed": lambda: walk(
        ok(R), Reply("failed", P, 1), Reply("compensated", R, 1, compensation=True)
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_round_trip(name: str) -> None:
    """from_fields(to_fields(state)) gives back the very same state."""
    state = SCENARIOS[name]()
    assert from_fields(to_fields(state, D), D) == state


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_round_trip_from_redis_bytes(name: str) -> None:
    """The hash as redis-py returns it (bytes keys and values) decodes to the same state."""
    state = SCENARIOS[name]()
    raw = {k.encode(): v.encode() for k, v in to_fields(state, D).items()}
    assert from_fields(raw, D) == state
    assert saga_type_of(raw) == (D.name, D.version)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fields_are_plain_text_with_everything_a_person_needs(name: str) -> None:
    """Every value is a str, and type, state, steps, errors, version and times are all there."""
    state = SCENARIOS[name]()
    fields = to_fields(state, D)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    required = {
        "type", "definition_version", "state", "current_step", "last_error", "version",
        "created_at", "updated_at", "data",
    }  # fmt: skip
    for step in D.steps:
        required |= {f"step.{step.name}.{f}" for f in ("status", "attempts", "result", "error")}
    assert required <= set(fields)


def test_fields_read_like_the_saga() -> None:
    """The values are the words and numbers a person expects, not encodings."""
    state = SCENARIOS["needs-intervention"]()
    f = to_fields(state, D)
    assert f["type"] == "order_fulfillment" and f["definition_version"] == "1"
    assert f["state"] == "needs_intervention" == Status.NEEDS_INTERVENTION.value
    assert f["current_step"] == S and f["current_step_index"] == "2"
    assert f["version"] == str(state.version) == "5"
    assert f["last_error"] == f"{P} compensation: nope"
    assert f[f"step.{P}.status"] == "compensation_failed"
    assert f[f"step.{P}.error"] == "nope"
    assert f[f"step.{S}.status"] == "failed" and f[f"step.{C}.status"] == "pending"
    assert f[f"step.{R}.attempts"] == "1" and f[f"step.{C}.attempts"] == "0"
    assert f[f"step.{R}.result"] == '{"ref":"reserve_inventory/1","note":"ü ✓"}'
    assert f[f"step.{C}.result"] == ""
    assert f["created_at"] == "2023-11-14T22:13:21.460+00:00"
    assert f["data"] == '{"order_id":"o-7","items":[{"sku":"A","qty":2}]}'
    assert f["correlation_id"] == "corr-7"


def test_timed_out_step_is_shown_as_may_have_run() -> None:
    """A step that may have run says so in the hash, and keeps its retry floors."""
    state = SCENARIOS["retried-by-hand"]()
    f = to_fields(state, D)
    assert f[f"step.{P}.compensation_attempts"] == "2"
    assert f[f"step.{P}.retry_floors"] == "0/1"
    state = SCENARIOS["pending-retry-wait"]()
    f = to_fields(state, D)
    assert f[f"step.{P}.may_have_run"] == "yes" and f[f"step.{R}.may_have_run"] == "no"
    assert f[f"step.{P}.status"] == StepStatus.RETRY_WAIT.value


def test_older_hash_without_optional_fields_still_loads() -> None:
    """Fields added later (floors, may_have_run, compensation attempts) default sensibly."""
    state = SCENARIOS["pending-retry-wait"]()
    f = to_fields(state, D)
    for step in D.steps:
        for suffix in ("compensation_attempts", "may_have_run", "retry_floors"):
            del f[f"step.{step.name}.{suffix}"]
    back = from_fields(f, D)
    assert back.steps[1].status == StepStatus.RETRY_WAIT and not back.steps[1].may_have_run
    assert back.steps[1].attempt_floor == back.steps[1].compensation_floor == 0


def test_saga_type_of_a_missing_hash_is_none() -> None:
    """An empty hash (no saga) has no type."""
    assert saga_type_of({}) is None


@pytest.mark.parametrize("ms", [0, 1_000, 1_700_000_000_123, 1_999_999_999_999])
def test_iso_times_round_trip(ms: int) -> None:
    """Timestamps are stored as ISO 8601 UTC with milliseconds and read back exactly."""
    assert from_iso(iso(ms)) == ms


@pytest.mark.parametrize("ms", [1_001, 2_147_498_450_062], ids=["1970", "2038"])
def test_iso_round_trip_is_exact_for_every_millisecond(ms: int) -> None:
    """Instants where float arithmetic would lose a millisecond read back exactly."""
    assert from_iso(iso(ms)) == ms
