"""SagaState <-> the plain-text fields of the saga's Redis hash (invariant 8, readable state)."""

from __future__ import annotations

from dataclasses import replace

import orjson
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
    TimerDue,
    command_id,
)
from orchestrator.engine.statecodec import (
    from_fields,
    from_iso,
    iso,
    join_long,
    logical_fields,
    saga_type_of,
    split_long,
    to_fields,
)
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
    assert from_fields(to_fields(state, D), D, state.saga_id) == state


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_round_trip_from_redis_bytes(name: str) -> None:
    """The hash as redis-py returns it (bytes keys and values) decodes to the same state."""
    state = SCENARIOS[name]()
    raw = {k.encode(): v.encode() for k, v in to_fields(state, D).items()}
    assert from_fields(raw, D, state.saga_id) == state
    assert saga_type_of(raw) == (D.name, D.version)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_field_stays_small_enough_for_a_compact_hash(name: str) -> None:
    """Plain-text fields, none over 64 bytes (Redis's listpack limit), far fewer than one per
    step attribute, with type, state, current step, version and times always there."""
    state = SCENARIOS[name]()
    fields = to_fields(state, D)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    assert all(len(k.encode()) <= 64 and len(v.encode()) <= 64 for k, v in fields.items())
    assert len(fields) <= 20
    required = {"type", "state", "current_step", "version", "created_at", "updated_at", "data"}
    assert required <= set(fields)


def test_fields_read_like_the_saga() -> None:
    """The values are the words and numbers a person expects, not encodings."""
    state = SCENARIOS["needs-intervention"]()
    f = to_fields(state, D)
    assert f["type"] == "order_fulfillment" and "definition_version" not in f  # 1
    assert f["state"] == "needs_intervention" == Status.NEEDS_INTERVENTION.value
    assert f["current_step"] == S
    assert f["version"] == str(state.version) == "5"
    assert f["last_error"] == f"{P} compensation: nope"
    assert f[f"step.{R}"] == 'completed a=1 {"ref":"reserve_inventory/1","note":"ü ✓"}'
    assert f[f"step.{P}"].startswith("compensation_failed a=1 c=1 {")
    assert f[f"step.{P}.error"] == "nope"
    assert f[f"step.{S}"] == "failed a=1" and f[f"step.{S}.error"] == "failed"
    assert f"step.{C}" not in f  # not begun
    assert f["created_at"] == "2023-11-14T22:13:21.460+00:00"
    assert f["data"] == '{"order_id":"o-7","items":[{"sku":"A","qty":2}]}'
    assert f["correlation_id"] == "corr-7"


def test_timed_out_step_is_shown_as_may_have_run() -> None:
    """A step that may have run says so in the hash, and keeps its retry floors."""
    state = SCENARIOS["retried-by-hand"]()
    f = to_fields(state, D)
    assert " c=2 " in f[f"step.{P}"] and " floors=0/1 " in f[f"step.{P}"]
    state = SCENARIOS["pending-retry-wait"]()
    f = to_fields(state, D)
    assert f[f"step.{P}"] == "retry_wait a=1 may_have_run"
    assert "may_have_run" not in f[f"step.{R}"]


def test_defaults_are_left_out_and_read_back() -> None:
    """No field for what is at its default: last_error, the correlation id equal to the saga
    id, state_entered_at equal to updated_at, definition version 1, a step not begun."""
    state = replace(SCENARIOS["started"](), correlation_id="order-7", last_error="")
    f = to_fields(state, D)
    assert not {"last_error", "correlation_id", "state_entered_at", "definition_version"} & set(f)
    assert [k for k in f if k.startswith("step.")] == [f"step.{R}"]
    assert from_fields(f, D, "order-7") == state


def test_long_values_are_split_and_joined_back() -> None:
    """Values over 64 bytes (the order data, results, errors) are stored in pieces of at most
    64 bytes, cut between characters, and read back whole."""
    data = {"note": "ü✓" * 60, "items": [{"sku": f"sku-{i}", "qty": i} for i in range(9)]}
    state = replace(SCENARIOS["needs-intervention"](), data=data, last_error="é" * 100)
    f = to_fields(state, D)
    assert all(len(v.encode()) <= 64 for v in f.values())
    assert "data~2" in f and "last_error~4" in f
    assert join_long(f)["data"] == orjson.dumps(data).decode()
    assert split_long({"x": "é" * 40})["x~2"] == "é" * 8
    assert split_long({"x": "y" * 1025}) == {"x": "y" * 1025}  # too long to stay compact anyway
    assert from_fields(f, D, state.saga_id) == state


def test_a_hash_in_the_older_layout_still_loads() -> None:
    """A saga written by an older version (one field per step attribute, every field present,
    `saga_id` and `current_step_index`, floors and may_have_run possibly missing) loads."""
    state = SCENARIOS["retried-by-hand"]()
    old = {
        "saga_id": state.saga_id, "type": D.name, "definition_version": "1",
        "state": state.status.value, "current_step": D.steps[state.current_step].name,
        "current_step_index": str(state.current_step), "version": str(state.version),
        "created_at": iso(state.created_ms), "updated_at": iso(state.updated_ms),
        "state_entered_at": iso(state.entered_ms), "correlation_id": state.correlation_id,
        "traceparent": state.traceparent, "last_error": state.last_error,
        "data": orjson.dumps(state.data).decode(),
    }  # fmt: skip
    for sd, st in zip(D.steps, state.steps, strict=True):
        p = f"step.{sd.name}."
        old |= {
            p + "status": st.status.value, p + "attempts": str(st.attempts),
            p + "compensation_attempts": str(st.compensation_attempts),
            p + "result": orjson.dumps(st.result).decode() if st.result is not None else "",
            p + "error": st.error, p + "may_have_run": "yes" if st.may_have_run else "no",
            p + "retry_floors": f"{st.attempt_floor}/{st.compensation_floor}",
        }  # fmt: skip
    assert from_fields(old, D, "ignored") == state
    assert logical_fields(old, D) == logical_fields(to_fields(state, D), D, state.saga_id)
    for sd in D.steps:
        for suffix in ("compensation_attempts", "may_have_run", "retry_floors"):
            del old[f"step.{sd.name}.{suffix}"]
    back = from_fields(old, D)
    assert back.steps[1].compensation_attempts == 0 and not back.steps[1].may_have_run


def test_the_attribute_view_shows_every_step() -> None:
    """`logical_fields` gives one field per step attribute, pending steps included, as
    `saga status` shows them."""
    state = SCENARIOS["pending-retry-wait"]()
    v = logical_fields(to_fields(state, D), D, state.saga_id)
    assert v[f"step.{P}.status"] == "retry_wait" and v[f"step.{P}.may_have_run"] == "yes"
    assert v[f"step.{C}.status"] == "pending" and v[f"step.{C}.attempts"] == "0"
    assert v[f"step.{R}.result"] == '{"ref":"reserve_inventory/1","note":"ü ✓"}'
    assert v["saga_id"] == "order-7" and v["last_error"] == f"{P}: {v[f'step.{P}.error']}"


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


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ('completed a=1 @259 {"reservationId":"res-7"}', 259),
        ("completed a=1 @259", 259),
        ("completed @12 a=2", 12),
        ('completed a=1 {"note":" @5"}', None),  # inside the result: not a time
        ("@5 completed", None),  # the status comes first, never a time
        ("completed @x @7", 7),
        ("completed @", None),
        ("completed a=1 @-3", None),
        ("pending", None),
    ],
)
def test_a_steps_time_is_read_from_its_head_only(text: str, ms: int | None) -> None:
    from orchestrator.engine.statecodec import time_of, with_time

    assert time_of(text) == ms
    if ms is None and " {" not in text and "@" not in text:
        assert time_of(with_time(text, 42)) == 42
