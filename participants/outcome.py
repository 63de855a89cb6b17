"""A command's outcome as stored in Redis, and the reply message built from it.

The reply is a pure function of (command, stored outcome): its message id is
`<command id>:reply` and its time is the outcome's, so a reply re-sent for a duplicate command is
byte-for-byte the message that was sent the first time, and the orchestrator recognises it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from schemas import codec
from schemas.codec import Format
from schemas.headers import (
    H_CORRELATION_ID,
    H_MESSAGE_ID,
    H_MESSAGE_TYPE,
    H_PARTICIPANT,
    H_SAGA_ID,
    H_TRACEPARENT,
)
from schemas.messages import SagaCommand, StepCompensated, StepCompleted, StepFailed

Kind = Literal["completed", "failed", "compensated"]
Reply = StepCompleted | StepFailed | StepCompensated
Headers = list[tuple[str, bytes]]

MAX_RESULT_KEY = 64
MAX_RESULT_VALUE = 4096
MAX_REASON = 4000


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    result: dict[str, str] = field(default_factory=dict)
    retryable: bool = False
    reason: str = ""
    time_ms: int = 0

    @classmethod
    def from_json(cls, text: str | bytes) -> Outcome:
        doc: dict[str, Any] = orjson.loads(text)
        kind = doc.get("kind")
        if kind not in ("completed", "failed", "compensated"):
            raise ValueError(f"stored outcome has unknown kind {kind!r}")
        # cjson writes an empty Lua table as {} or [] depending on its mood: accept both.
        result = doc.get("result") or {}
        return cls(
            kind=kind,
            result={str(k): str(v) for k, v in dict(result).items()},
            retryable=bool(doc.get("retryable", False)),
            reason=str(doc.get("reason", "")),
            time_ms=int(doc.get("time", 0)),
        )


def check_result(value: object) -> dict[str, str]:
    """A handler's return value as a step result; anything else is a bug in the handler."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"a handler must return dict[str, str] or None, not {type(value).__name__}")
    result: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not 0 < len(k) <= MAX_RESULT_KEY:
            raise ValueError(f"result key {k!r} must be a string of 1..{MAX_RESULT_KEY} characters")
        text = v if isinstance(v, str) else str(v)
        if len(text) > MAX_RESULT_VALUE:
            raise ValueError(f"result value of {k!r} is longer than {MAX_RESULT_VALUE} characters")
        result[k] = text
    return result


def reply_id(command_id: str) -> str:
    rid = f"{command_id}:reply"
    # Message ids are capped at 256 characters; stay deterministic past that.
    return rid if len(rid) <= 256 else hashlib.sha256(rid.encode()).hexdigest() + ":reply"


def build_reply(cmd: SagaCommand, outcome: Outcome) -> Reply:
    common: dict[str, Any] = {
        "message_id": reply_id(cmd.message_id),
        "saga_id": cmd.saga_id,
        "saga_type": cmd.saga_type,
        "correlation_id": cmd.correlation_id,
        "causation_id": cmd.message_id,
        "traceparent": cmd.traceparent,
        "step": cmd.step,
        "attempt": cmd.attempt,
        "command_id": cmd.message_id,
        "command_type": cmd.command_type,
        "compensation": cmd.compensation,
    }
    if outcome.time_ms:
        common["time"] = datetime.fromtimestamp(outcome.time_ms / 1000, UTC)
    if outcome.kind == "completed":
        return StepCompleted(**common, result=outcome.result)
    if outcome.kind == "compensated":
        return StepCompensated(**common)
    return StepFailed(
        **common, retryable=outcome.retryable, reason=outcome.reason[:MAX_REASON] or "failed"
    )


def reply_record(
    cmd: SagaCommand, outcome: Outcome, participant: str, fmt: Format
) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of the reply for the events topic, keyed by saga id."""
    reply = build_reply(cmd, outcome)
    headers: Headers = [
        (H_MESSAGE_TYPE, reply.message_type.encode()),
        (H_SAGA_ID, cmd.saga_id.encode()),
        (H_MESSAGE_ID, reply.message_id.encode()),
        (H_PARTICIPANT, participant.encode()),
    ]
    if cmd.correlation_id:
        headers.append((H_CORRELATION_ID, cmd.correlation_id.encode()))
    if cmd.traceparent:
        headers.append((H_TRACEPARENT, cmd.traceparent.encode()))
    return cmd.saga_id.encode(), codec.encode(reply, fmt), headers
