"""The saga's state, the inputs the core understands, and what a decision produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class Status(StrEnum):
    STARTED = "started"
    PENDING = "pending"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    #: compensation could not finish; a person must act (`saga resume`, `saga skip-compensation`).
    NEEDS_INTERVENTION = "needs_intervention"


FINAL = frozenset({Status.COMPLETED, Status.FAILED})
FORWARD = frozenset({Status.STARTED, Status.PENDING})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    COMPENSATING = "compensating"
    COMPENSATION_WAIT = "compensation_wait"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    #: compensated by hand, recorded with the operator's reason.
    COMPENSATION_SKIPPED = "compensation_skipped"
    #: its condition was false when its stage began: never run, never compensated.
    SKIPPED = "skipped"
    #: a wait step waiting for its signal (or a reject signal, or its timeout).
    WAITING = "waiting"


@dataclass(frozen=True)
class StepState:
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    compensation_attempts: int = 0
    result: dict[str, str] | None = None
    error: str = ""
    #: an attempt's outcome is unknown (it timed out or was aborted), so it may have run and
    #: must be compensated.
    may_have_run: bool = False
    #: retry budgets restart here after a person retried or resumed by hand.
    attempt_floor: int = 0
    compensation_floor: int = 0


@dataclass(frozen=True)
class SagaState:
    saga_id: str
    saga_type: str
    definition_version: int
    status: Status
    current_step: int
    steps: tuple[StepState, ...]
    data: dict[str, Any]
    version: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    entered_ms: int = 0
    correlation_id: str = ""
    traceparent: str = ""
    last_error: str = ""


# ---- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    saga_id: str
    saga_type: str
    data: dict[str, Any]
    correlation_id: str = ""
    traceparent: str = ""


@dataclass(frozen=True)
class Reply:
    kind: Literal["completed", "failed", "compensated"]
    step: str
    attempt: int
    compensation: bool = False
    result: dict[str, str] = field(default_factory=dict)
    retryable: bool = False
    reason: str = ""
    #: the id of the command answered; it must be the one the saga issued for (step, direction,
    #: attempt), or the reply is ignored as stray (a forgery or a misrouted reply)
    command_id: str = ""


@dataclass(frozen=True)
class TimerDue:
    kind: Literal["timeout", "retry"]
    step: str
    attempt: int
    compensation: bool = False


@dataclass(frozen=True)
class Operator:
    action: Literal["retry", "abort", "resume", "skip_compensation"]
    step: str | None = None
    reason: str = ""
    operator: str = ""


@dataclass(frozen=True)
class Signal:
    """A named outside event for a saga (an approval, say). `signal_id` is its dedupe id: the
    engine uses it as the input's message id, so a signal sent twice is applied once."""

    name: str
    signal_id: str
    data: dict[str, Any] = field(default_factory=dict)
    sender: str = ""


Event = Start | Reply | TimerDue | Operator | Signal


# ---- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A command to a participant; the id is deterministic so participants can dedupe it."""

    command_id: str
    participant: str
    command_type: str
    step: str
    attempt: int
    compensation: bool
    original_result: dict[str, str] | None = None


@dataclass(frozen=True)
class Timer:
    """A timer; `member` is its deterministic id in the timer set and names everything needed
    to turn it back into a `TimerDue` event."""

    member: str
    due_ms: int


@dataclass(frozen=True)
class Transition:
    outcome: Literal["applied", "ignored", "rejected"]
    state: SagaState | None
    note: str
    commands: tuple[Command, ...] = ()
    timers: tuple[Timer, ...] = ()
    cancel_timers: tuple[str, ...] = ()
    #: a reply that answers no command the saga issued: ignored, and counted apart
    stray: bool = False
    #: a reply or timer for an attempt the saga no longer waits for (answered, timed out or
    #: already fired), or a refused signal: ignored; an exact copy of an input the history
    #: holds is not recorded again and is counted as a duplicate (step.lua)
    duplicate: bool = False


def command_id(saga_id: str, step: str, compensation: bool, attempt: int) -> str:
    return f"{saga_id}:{step}:{'compensation' if compensation else 'action'}:{attempt}"


def timer_member(saga_id: str, kind: str, step: str, attempt: int, compensation: bool) -> str:
    return f"{saga_id}|{kind}|{step}|{attempt}|{'c' if compensation else 'a'}"


def parse_timer_member(member: str) -> tuple[str, TimerDue] | None:
    """Inverse of `timer_member`; None for a member this version does not understand."""
    parts = member.split("|")
    if len(parts) != 5 or parts[1] not in ("timeout", "retry") or not parts[3].isdigit():
        return None
    kind: Literal["timeout", "retry"] = "timeout" if parts[1] == "timeout" else "retry"
    return parts[0], TimerDue(kind, parts[2], int(parts[3]), parts[4] == "c")
