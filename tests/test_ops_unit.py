"""Pure pieces of the operations layer: parsing, applicability of operator commands, replay
headers and the Prometheus rendering."""

from __future__ import annotations

import re

import orjson
import pytest

from orchestrator.core.model import SagaState, Status, StepState, Transition
from orchestrator.ops import InputError, RefusedError, dlq, intervene, validate
from orchestrator.ops.query import SagaStatus, Step
from orchestrator.telemetry.metrics import Gauges, Metrics
from schemas.dlq import dead_letter_headers, header


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("30s", 30_000), ("10m", 600_000), ("2h", 7_200_000), ("1d", 86_400_000)],
)
def test_durations(text: str, ms: int) -> None:
    """Durations are a whole number and a unit."""
    assert validate.duration_ms(text) == ms


def test_positions_and_times() -> None:
    """Positions are partition:offset; --since takes a duration back or an ISO time."""
    assert validate.position("2:41") == (2, 41)
    assert validate.since_ms("1m", 100_000) == 40_000
    assert validate.since_ms("1970-01-01T00:00:01", 0) == 1000
    with pytest.raises(InputError):
        validate.since_ms("soon", 0)


def status(state: str, current: str, **steps: str) -> SagaStatus:
    return SagaStatus(
        saga_id="s-1",
        saga_type="order_fulfillment",
        state=state,
        current_step=current,
        version=3,
        created_at="",
        updated_at="",
        state_entered_at="",
        last_error="",
        correlation_id="s-1",
        traceparent="",
        data="{}",
        steps=[Step(n, st, 1, 0, "", "", False) for n, st in steps.items()],
    )


PENDING = status("pending", "b", a="completed", b="running")
WAITING = status("pending", "b", a="completed", b="retry_wait")
DONE_STEP = status("pending", "b", a="completed", b="completed")
STUCK = status("needs_intervention", "b", a="compensation_failed", b="failed")
COMPENSATING = status("compensating", "b", a="compensating", b="failed")
COMPLETED = status("completed", "b", a="completed", b="completed")
FAILED = status("failed", "b", a="compensated", b="failed")

APPLIES = {
    "retry": [PENDING, WAITING, STUCK, COMPENSATING],
    "abort": [PENDING, WAITING, DONE_STEP],
    "resume": [STUCK, COMPENSATING],
    "skip_compensation": [STUCK, COMPENSATING],
}
ALL = [PENDING, WAITING, DONE_STEP, STUCK, COMPENSATING, COMPLETED, FAILED]


@pytest.mark.parametrize("action", intervene.ACTIONS)
def test_operator_commands_are_refused_where_they_cannot_apply(action: intervene.Action) -> None:
    """Each action is accepted exactly in the states the core acts on, refused elsewhere."""
    for s in ALL:
        step = "a" if action == "skip_compensation" else None
        if any(s is ok for ok in APPLIES[action]):
            intervene.check(s, action, step)
        else:
            with pytest.raises(RefusedError) as exc:
                intervene.check(s, action, step)
            assert "\n" not in exc.value.message


def test_operator_command_carries_the_saga_context() -> None:
    """The command is keyed to the saga, names the step and reason, and gets a fresh id."""
    one = intervene.command(
        STUCK, "skip_compensation", step="a", reason="done by hand", operator="eve"
    )
    two = intervene.command(STUCK, "resume", operator="eve")
    assert one.action == "skip_compensation" and one.step == "a" and one.operator == "eve"
    assert one.message_id != two.message_id and two.step is None
    with pytest.raises(InputError):
        intervene.command(STUCK, "skip_compensation", step="a", reason="  ")
    with pytest.raises(InputError):
        intervene.command(STUCK, "skip_compensation", step="zzz", reason="x")


def letter(value: bytes, extra: list[tuple[str, bytes]] | None = None) -> dlq.DeadLetter:
    headers = dead_letter_headers(
        [("saga-id", b"s-1"), *(extra or [])],
        topic="in",
        partition=1,
        offset=7,
        error_class="invalid",
        error_message="bad",
        source="orchestrator",
    )
    return dlq.DeadLetter(0, 3, 0, b"s-1", value, headers)


def test_replay_headers() -> None:
    """Reason headers go, the replay is marked, and the original position becomes the id when
    the value names none; an explicit messageId or an earlier id header is kept."""
    bare = dlq.replay_headers(letter(b"not json"), b"not json")
    assert not [k for k, _ in bare if k.startswith("dlq-") and k != "dlq-replayed"]
    assert header(bare, "dlq-replayed") == "0:3"
    assert header(bare, "saga-message-id") == "in:1:7"
    assert header(bare, "saga-id") == "s-1"
    with_id = orjson.dumps(
        {
            "messageId": "m-1",
            "sagaId": "s-1",
            "command": "StartOrder",
            "customerId": "c",
            "items": [{"productId": "p", "quantity": 1}],
            "amount": 1,
        }
    )
    assert header(dlq.replay_headers(letter(with_id), with_id), "saga-message-id") is None
    kept = dlq.replay_headers(letter(b"x", [("saga-message-id", b"first")]), b"x")
    assert header(kept, "saga-message-id") == "first"


def test_replay_plan_refuses_truncated_values_and_many_replacements() -> None:
    """A truncated value needs a replacement; a replacement is for one record only."""
    cut = letter(b"{", [("dlq-value-truncated-from", b"99999999")])
    with pytest.raises(RefusedError):
        dlq.plan([cut])
    assert dlq.plan([cut], b"{}")[0].value == b"{}"
    with pytest.raises(InputError):
        dlq.plan([cut, cut], b"{}")


def test_prometheus_rendering() -> None:
    """Counters, a cumulative histogram, and gauges in the text format."""
    m = Metrics()
    state = SagaState("s", "t", 1, Status.COMPLETED, 0, (StepState(),), {})
    m.observe("pending", Transition("applied", state, ""), False)
    for s in (0.004, 0.3, 0.3, 100.0):
        m.observe_step_latency(s)
    text = m.render(
        Gauges(
            sagas_by_state={"completed": 3},
            outbox_depth=2,
            sagas_stuck=1,
            consumer_lag={("in", 0): 5, ("in", 1): 1},
            assigned_partitions=2,
            redis_up=True,
            ready=True,
        )
    )
    lines = set(text.splitlines())
    assert "saga_sagas_completed_total 1" in lines
    assert 'saga_step_latency_seconds_bucket{le="0.005"} 1' in lines
    assert 'saga_step_latency_seconds_bucket{le="0.5"} 3' in lines
    assert 'saga_step_latency_seconds_bucket{le="30"} 3' in lines
    assert 'saga_step_latency_seconds_bucket{le="+Inf"} 4' in lines
    assert "saga_step_latency_seconds_count 4" in lines
    assert 'saga_sagas{state="completed"} 3' in lines
    assert "saga_outbox_depth 2" in lines
    assert 'saga_consumer_lag{topic="in",partition="0"} 5' in lines
    assert "saga_consumer_lag_records 6" in lines
    assert "saga_sagas_stuck 1" in lines
    assert "saga_ready 1" in lines
    sample = re.compile(r'^[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line
