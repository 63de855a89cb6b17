"""SagaState <-> the flat, human-readable fields of the saga's Redis hash.

`redis-cli HGETALL saga:<id>` shows, in plain text: type, definition_version, state,
current_step, step.<name>.status / attempts / result / error, last_error, version, created_at,
updated_at, state_entered_at, correlation_id and the order data as JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import SagaState, Status, StepState, StepStatus


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_iso(text: str) -> int:
    # integer arithmetic: float timestamps read some instants back 1 ms early
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)


def to_fields(state: SagaState, definition: SagaDefinition) -> dict[str, str]:
    current = definition.steps[state.current_step].name if state.steps else ""
    fields = {
        "saga_id": state.saga_id,
        "type": state.saga_type,
        "definition_version": str(state.definition_version),
        "state": state.status.value,
        "current_step": current,
        "current_step_index": str(state.current_step),
        "version": str(state.version),
        "created_at": iso(state.created_ms),
        "updated_at": iso(state.updated_ms),
        "state_entered_at": iso(state.entered_ms),
        "correlation_id": state.correlation_id,
        "traceparent": state.traceparent,
        "last_error": state.last_error,
        "data": orjson.dumps(state.data).decode(),
    }
    for sd, s in zip(definition.steps, state.steps, strict=True):
        p = f"step.{sd.name}."
        fields[p + "status"] = s.status.value
        fields[p + "attempts"] = str(s.attempts)
        fields[p + "compensation_attempts"] = str(s.compensation_attempts)
        fields[p + "result"] = orjson.dumps(s.result).decode() if s.result is not None else ""
        fields[p + "error"] = s.error
        fields[p + "may_have_run"] = "yes" if s.may_have_run else "no"
        fields[p + "retry_floors"] = f"{s.attempt_floor}/{s.compensation_floor}"
    return fields


def decode_fields(raw: dict[Any, Any]) -> dict[str, str]:
    """Hash fields as text; a no-op for a client that already decodes responses."""
    if not raw or isinstance(next(iter(raw)), str):
        return raw
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def saga_type_of(raw: dict[Any, Any]) -> tuple[str, int] | None:
    f = decode_fields(raw)
    if "type" not in f:
        return None
    return f["type"], int(f.get("definition_version", "1"))


def from_fields(raw: dict[Any, Any], definition: SagaDefinition) -> SagaState:
    f = decode_fields(raw)
    steps = []
    for sd in definition.steps:
        p = f"step.{sd.name}."
        result = f.get(p + "result", "")
        floors = f.get(p + "retry_floors", "0/0").split("/")
        steps.append(
            StepState(
                status=StepStatus(f.get(p + "status", "pending")),
                attempts=int(f.get(p + "attempts", "0")),
                compensation_attempts=int(f.get(p + "compensation_attempts", "0")),
                result=orjson.loads(result) if result else None,
                error=f.get(p + "error", ""),
                may_have_run=f.get(p + "may_have_run") == "yes",
                attempt_floor=int(floors[0]),
                compensation_floor=int(floors[1]),
            )
        )
    return SagaState(
        saga_id=f["saga_id"],
        saga_type=f["type"],
        definition_version=int(f["definition_version"]),
        status=Status(f["state"]),
        current_step=int(f.get("current_step_index", "0")),
        steps=tuple(steps),
        data=orjson.loads(f.get("data") or "{}"),
        version=int(f["version"]),
        created_ms=from_iso(f["created_at"]),
        updated_ms=from_iso(f["updated_at"]),
        entered_ms=from_iso(f["state_entered_at"]),
        correlation_id=f.get("correlation_id", ""),
        traceparent=f.get("traceparent", ""),
        last_error=f.get("last_error", ""),
    )
