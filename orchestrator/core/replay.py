"""Replay: does a (new) definition still decide a recorded history the way it was decided?

A saga's history records each input with the time it was decided, what came of it (applied,
ignored or rejected) and the saga's status and step statuses after it. `replay` feeds the same
inputs, at the same times, through `decide` under the definition given, and reports the first
input whose outcome differs: a new version that would send an in-flight saga down another path
(a step renamed, added or moved, a condition changed, a group split) shows up here before it
ships. Pure: loading histories (Redis, files) and the CLI live elsewhere.

What is compared, input by input:
- the outcome (applied / ignored / rejected);
- for an input that left a saga state (applied or ignored): its status and the status of each
  step, by step name, exactly (a step that exists on one side only is a divergence).
A rejected input leaves no state (the daemon dead-letters it), so only its outcome counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.core.decide import decide, describe_event
from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import Event, SagaState, Transition


@dataclass(frozen=True)
class Outcome:
    """What one input did: the transition's outcome and the saga's state after it."""

    outcome: str
    #: the saga status after the input; "" when no state is left (a rejected input)
    status: str = ""
    #: step name -> step status after the input
    steps: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, t: Transition, names: Sequence[str]) -> Outcome:
        """The summary of a transition; `names` are the definition's step names, in order."""
        if t.state is None:
            return cls(t.outcome)
        steps = {n: str(s.status) for n, s in zip(names, t.state.steps, strict=False)}
        return cls(t.outcome, str(t.state.status), steps)

    def describe(self) -> str:
        if not self.status:
            return self.outcome
        steps = ", ".join(f"{k}={v}" for k, v in self.steps.items())
        return f"{self.outcome}, saga {self.status} [{steps}]"


@dataclass(frozen=True)
class Recorded:
    """One input of a recorded history and what it did then."""

    event: Event
    now_ms: int
    expected: Outcome


@dataclass(frozen=True)
class Divergence:
    """The first recorded input the definition decides differently."""

    index: int
    event: Event
    expected: Outcome
    got: Outcome
    #: what differs, in words
    reason: str
    #: the replayed decision's own note (why it went that way)
    note: str

    def describe(self) -> str:
        return (
            f"input {self.index} ({describe_event(self.event)}): {self.reason}; recorded "
            f"{self.expected.describe()}, replayed {self.got.describe()} ({self.note})"
        )


def _difference(expected: Outcome, got: Outcome) -> str:
    if expected.outcome != got.outcome:
        return f"outcome {got.outcome}, recorded {expected.outcome}"
    if expected.outcome == "rejected":
        return ""
    if expected.status != got.status:
        return f"saga status {got.status or 'none'}, recorded {expected.status or 'none'}"
    for name in sorted(set(expected.steps) | set(got.steps)):
        want, have = expected.steps.get(name), got.steps.get(name)
        if want != have:
            return f"step {name} is {have or 'absent'}, recorded {want or 'absent'}"
    return ""


def replay(definition: SagaDefinition, inputs: Iterable[Recorded]) -> Divergence | None:
    """Run the recorded inputs through `decide` under `definition`; the first divergence, or
    None when every input is decided as recorded."""
    names = [s.name for s in definition.steps]
    registry = {definition.name: definition}
    state: SagaState | None = None
    for index, rec in enumerate(inputs):
        t = decide(state, rec.event, rec.now_ms, registry, definition)
        got = Outcome.of(t, names)
        reason = _difference(rec.expected, got)
        if reason:
            return Divergence(index, rec.event, rec.expected, got, reason, t.note)
        if t.outcome == "applied":
            state = t.state
    return None
