"""A choreography, described as data, and how its events become a readable saga state.

In a choreography nobody sends commands: services react to each other's events. The tracker
(`orchestrator.engine.tracker`) only watches, and keeps the same saga hash and history the
orchestrator keeps, so `saga status`, `saga list` and redis-cli show a choreographed saga too.
What it needs to know is declared here:

    ORDER = Choreography(
        "order_choreography",
        start="OrderPlaced",
        steps=(
            Step("reserve", "choreo-inventory", completed="InventoryReserved",
                 failed="InventoryFailed", compensated="InventoryReleased"),
            Step("charge", "choreo-payment", completed="PaymentCompleted",
                 failed="PaymentFailed", compensated="PaymentRefunded"),
            Step("ship", "choreo-shipping", completed="OrderShipped", failed="ShippingFailed"),
        ),
        completed=("OrderShipped",),
        failed=("InventoryReleased", "InventoryFailed"),
    )

`track(choreography, saga, event)` is the rule, pure and total (an event it cannot use is
`ignored` with a reason, never an exception):

- The start event starts the saga (`started`) and gives it its data; a second start is a
  duplicate. A start that arrives after other events of its saga fills in the data and changes
  nothing else.
- A step event moves its step FORWARD only: pending -> completed or failed -> compensated. An
  event that would not move its step forward (a copy under another id, or one that arrives late,
  after the step went further) is recorded as ignored, with the step's status in the note.
- The saga's state follows from its steps and end events: an end event makes it `completed` or
  `failed`; otherwise a failed or compensated step makes it `compensating`, any other step event
  `pending`. A final state is never left: the first end event wins, and later events still move
  their steps forward (the step's record gets more exact) without changing the saga's state.

So apart from two conflicting end events, the state a saga ends in does not depend on the order
its events arrived in. Events of other types are `ignored` ("not part of the choreography").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from orchestrator.core.definition import SagaDefinition, StepDef
from orchestrator.core.model import FINAL, SagaState, Status, StepState, StepStatus

#: event types and step names follow the wire's name pattern (`schemas.messages.Name`)
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
#: the hash field that marks a saga as tracked, not orchestrated (operator actions refuse it)
MODE_FIELD, MODE = "mode", "choreography"
#: a step's recorded result keeps at most this many of the values its event added
MAX_RESULT_KEYS = 16
MAX_RESULT_VALUE = 256

Mark = Literal["completed", "failed", "compensated"]
_RANK = {
    StepStatus.PENDING: 0,
    StepStatus.COMPLETED: 1,
    StepStatus.FAILED: 1,
    StepStatus.COMPENSATED: 2,
}


@dataclass(frozen=True)
class Step:
    """One step of a choreography: the service that performs it and the events that report it
    (an empty name: the step has no such event)."""

    name: str
    service: str
    completed: str
    failed: str = ""
    compensated: str = ""


@dataclass(frozen=True)
class Choreography:
    name: str
    start: str
    steps: tuple[Step, ...]
    #: events that end the saga completed, and failed
    completed: tuple[str, ...]
    failed: tuple[str, ...] = ()
    version: int = 1
    #: event type -> (step, what it says): built from `steps`
    events: Mapping[str, tuple[str, Mark]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        at = f"choreography {self.name!r}"
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ValueError(f"{at}: the name must match {NAME.pattern}")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise ValueError(f"{at}: the version must be a whole number >= 1")
        for what, value in (("steps", self.steps), ("completed", self.completed)):
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{at}: {what} must be a non-empty tuple")
        if not isinstance(self.failed, tuple):
            raise ValueError(f"{at}: failed must be a tuple of event types")
        events: dict[str, tuple[str, Mark]] = {}
        for s in self.steps:
            if not isinstance(s, Step):
                raise ValueError(f"{at}: steps must be Step, not {type(s).__name__}")
            for name in (s.name, s.service, s.completed):
                if not isinstance(name, str) or not NAME.match(name):
                    raise ValueError(f"{at}, step {s.name!r}: {name!r} must match {NAME.pattern}")
            marks: tuple[tuple[str, Mark], ...] = (
                (s.completed, "completed"),
                (s.failed, "failed"),
                (s.compensated, "compensated"),
            )
            for event_type, mark in marks:
                if not event_type:
                    continue
                if not NAME.match(event_type):
                    raise ValueError(f"{at}: event type {event_type!r} must match {NAME.pattern}")
                if event_type in events or event_type == self.start:
                    raise ValueError(f"{at}: event type {event_type!r} is used twice")
                events[event_type] = (s.name, mark)
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"{at}: step names repeat")
        if not isinstance(self.start, str) or not NAME.match(self.start):
            raise ValueError(f"{at}: the start event {self.start!r} must match {NAME.pattern}")
        for end in (*self.completed, *self.failed):
            if end not in events:
                raise ValueError(f"{at}: end event {end!r} is not a step's event")
        if set(self.completed) & set(self.failed):
            raise ValueError(f"{at}: an event cannot end it both completed and failed")
        object.__setattr__(self, "events", events)

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset({self.start, *self.events})

    def definition(self) -> SagaDefinition:
        """The choreography as a saga definition, so the engine's codec reads and writes its
        hash (`statecodec`): one step per step, its events as action and compensation."""
        return SagaDefinition(
            self.name,
            self.version,
            tuple(StepDef(s.name, s.service, s.completed, s.compensated) for s in self.steps),
        )


@dataclass(frozen=True)
class Observed:
    """One event as the tracker saw it."""

    event_type: str
    event_id: str
    data: dict[str, Any]
    source: str = ""


@dataclass(frozen=True)
class Tracked:
    outcome: Literal["applied", "ignored"]
    #: the saga after the event: None when ignored for a saga not tracked yet (nothing to record)
    state: SagaState | None
    note: str
    #: the id of the start event, once seen ("" before)
    start_input: str = ""


def new_saga(c: Choreography, saga_id: str, now_ms: int) -> SagaState:
    return SagaState(
        saga_id=saga_id,
        saga_type=c.name,
        definition_version=c.version,
        status=Status.STARTED,
        current_step=0,
        steps=tuple(StepState() for _ in c.steps),
        data={},
        version=0,
        created_ms=now_ms,
        updated_ms=now_ms,
        entered_ms=now_ms,
        correlation_id=saga_id,
    )


def track(
    c: Choreography,
    saga: SagaState | None,
    start_input: str,
    event: Observed,
    saga_id: str,
    now_ms: int,
) -> Tracked:
    """What `event` does to the tracked saga (`saga`, None when not tracked yet; `start_input`,
    the id of its start event when seen). See the module docstring for the rule."""
    e = event.event_type
    if e not in c.event_types:
        return Tracked("ignored", saga, f"{e}: not an event of {c.name}", start_input)
    current = saga or new_saga(c, saga_id, now_ms)
    if e == c.start:
        return _start(current, saga is not None, start_input, event, now_ms)
    step, mark = c.events[e]
    i = next(n for n, s in enumerate(c.steps) if s.name == step)
    before = current.steps[i]
    known = set(current.data).union(*(s.result or {} for s in current.steps))
    after = _step_after(before, mark, event, known)
    if _RANK[after.status] <= _RANK.get(before.status, 0):
        note = f"{e}: step {step} is already {before.status.value} (a copy, or late)"
        return Tracked("ignored", saga, note, start_input)
    steps = (*current.steps[:i], after, *current.steps[i + 1 :])
    status = _status(c, current.status, e, steps)
    note = f"{e}: {step} {after.status.value}"
    if current.status in FINAL:
        note += f"; the saga stays {current.status.value}"
    elif status != current.status:
        note += f"; {current.status.value} -> {status.value}"
    error = current.last_error
    if after.status == StepStatus.FAILED:
        error = f"{step}: {after.error}"
    state = replace(
        current,
        status=status,
        current_step=i,
        steps=steps,
        version=current.version + 1,
        updated_ms=now_ms,
        entered_ms=now_ms if status != current.status else current.entered_ms,
        last_error=error,
    )
    return Tracked("applied", state, note, start_input)


def _start(
    saga: SagaState, existed: bool, start_input: str, event: Observed, now_ms: int
) -> Tracked:
    if start_input:
        note = f"{event.event_type}: a second start (the saga started with {start_input})"
        return Tracked("ignored", saga if existed else None, note, start_input)
    state = replace(saga, data=event.data, version=saga.version + 1, updated_ms=now_ms)
    if existed:
        note = f"{event.event_type}: the start, after later events; data recorded"
    else:
        note = f"{event.event_type}: saga started"
    return Tracked("applied", state, note, event.event_id)


def _step_after(before: StepState, mark: Mark, event: Observed, known: set[str]) -> StepState:
    if mark == "compensated":
        return replace(
            before,
            status=StepStatus.COMPENSATED,
            attempts=max(before.attempts, 1),
            compensation_attempts=before.compensation_attempts + 1,
        )
    if mark == "failed":
        reason = event.data.get("reason")
        error = str(reason)[:1000] if reason else f"{event.event_type} from {event.source or '?'}"
        return replace(before, status=StepStatus.FAILED, attempts=1, error=error)
    return replace(before, status=StepStatus.COMPLETED, attempts=1, result=_added(event, known))


def _added(event: Observed, known: set[str]) -> dict[str, str] | None:
    """What the event added to what the saga knew (its data, the earlier steps' results): the
    step's result, as text, kept small."""
    out: dict[str, str] = {}
    for k, v in event.data.items():
        if k in known or k == "reason" or len(out) >= MAX_RESULT_KEYS:
            continue
        text = v if isinstance(v, str) else orjson.dumps(v).decode()
        out[str(k)[:64]] = text[:MAX_RESULT_VALUE]
    return out or None


def _status(c: Choreography, was: Status, event_type: str, steps: tuple[StepState, ...]) -> Status:
    if was in FINAL:
        return was
    if event_type in c.completed:
        return Status.COMPLETED
    if event_type in c.failed:
        return Status.FAILED
    backward = (StepStatus.FAILED, StepStatus.COMPENSATED)
    if any(s.status in backward for s in steps):
        return Status.COMPENSATING
    return Status.PENDING
