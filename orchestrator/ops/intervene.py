"""Manual intervention: check that an operator command can apply, then build it.

The command travels as an `OperatorCommand` on the events topic keyed by the saga id, so the
daemon stays the only writer of saga state; these checks only spare a person a command the
core would ignore (the core decides again, against the state it holds at that moment).
"""

from __future__ import annotations

import getpass
from typing import Literal

from orchestrator.core.model import StepStatus
from orchestrator.ops import InputError, RefusedError
from orchestrator.ops.query import SagaStatus
from schemas.messages import OperatorCommand, new_id

Action = Literal["retry", "abort", "resume", "skip_compensation"]
ACTIONS: tuple[Action, ...] = ("retry", "abort", "resume", "skip_compensation")
_FORWARD = ("started", "pending")
_BACKWARD = ("compensating", "needs_intervention")
_COMPENSATION_OPEN = (
    StepStatus.COMPENSATING.value,
    StepStatus.COMPENSATION_WAIT.value,
    StepStatus.COMPENSATION_FAILED.value,
)
_RUNNING = (StepStatus.RUNNING.value, StepStatus.RETRY_WAIT.value)


def tracked(status: SagaStatus) -> str:
    """Why no operator action applies to a saga the choreography tracker follows ("" for an
    orchestrated saga): its services act on their own events, and the tracker only records
    them, so a retry, an abort or a signal would reach nobody."""
    if status.mode != "choreography":
        return ""
    return (
        f"saga {status.saga_id} is a tracked choreography ({status.saga_type}): its services "
        "react to each other's events and the tracker only records them, so retry, abort, "
        "resume, skip-compensation and signals do not apply; act on the services themselves"
    )


def check(status: SagaStatus, action: Action, step: str | None = None) -> None:
    """Raise `RefusedError` with a one-line explanation when `action` cannot apply."""
    sid, state = status.saga_id, status.state
    if tracked(status):
        raise RefusedError(tracked(status))
    if state in ("completed", "failed"):
        raise RefusedError(f"saga {sid} is {state}: it is final, nothing to {_verb(action)}")
    if action == "abort":
        if state not in _FORWARD:
            raise RefusedError(f"saga {sid} is {state}: abort applies to a started or pending saga")
    elif action == "retry":
        if state in _FORWARD:
            current = status.step(status.current_step)
            if current is None or current.status not in _RUNNING:
                shown = current.status if current else "unknown"
                raise RefusedError(
                    f"saga {sid}: step {status.current_step} is {shown}, nothing to retry"
                )
    elif action == "resume":
        if state not in _BACKWARD:
            raise RefusedError(
                f"saga {sid} is {state}: resume applies to a saga in needs_intervention or "
                "compensating (use retry for a step going forward)"
            )
    elif action == "skip_compensation":
        if state not in _BACKWARD:
            raise RefusedError(
                f"saga {sid} is {state}: skip-compensation applies to a saga in "
                "needs_intervention or compensating"
            )
        if step is None:
            raise InputError("skip-compensation needs --step")
        s = status.step(step)
        if s is None:
            names = ", ".join(x.name for x in status.steps)
            raise InputError(f"saga {sid} has no step {step!r} (steps: {names})")
        if s.status not in _COMPENSATION_OPEN:
            raise RefusedError(
                f"saga {sid}: the compensation of {step} is not pending (step is {s.status})"
            )


def command(
    status: SagaStatus,
    action: Action,
    *,
    step: str | None = None,
    reason: str = "",
    operator: str | None = None,
) -> OperatorCommand:
    """The operator command for a saga, with a fresh message id (checked with `check` first)."""
    check(status, action, step)
    if action == "skip_compensation" and not reason.strip():
        raise InputError("skip-compensation needs --reason: say what was done by hand")
    if len(reason) > 4096:
        raise InputError("reason is longer than 4096 characters")
    return OperatorCommand(
        message_id=new_id(),
        saga_id=status.saga_id,
        saga_type=status.saga_type,
        correlation_id=status.correlation_id or None,
        traceparent=status.traceparent or None,
        action=action,
        step=step if action == "skip_compensation" else None,
        reason=reason,
        operator=(operator or _whoami())[:256],
    )


def _verb(action: Action) -> str:
    return action.replace("_", " ")


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
