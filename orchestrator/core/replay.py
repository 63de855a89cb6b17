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
  step, by step name, exactly (a step that exists on one side only is a divergence);
- the commands it sent (participant, command type, step and attempt), in order: a renamed
  compensation or a step moved to another participant sends an in-flight saga's command where
  no one answers it.
A rejected input leaves no state (the daemon dead-letters it), so only its outcome counts. A
history read back from Redis records each input's outcome and saga status but not its step
statuses or commands (`orchestrator.ops.replay_io`): `Outcome.steps` and `Outcome.commands` are
None there, and what is None is not compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest

from orchestrator.core.decide import decide, describe_event
from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import Event, SagaState, Transition


@dataclass(frozen=True)
class Outcome:
    """What one input did: the transition's outcome and the saga's state after it."""

    outcome: str
    #: the saga status after the input; "" when no state is left (a rejected input)
    status: str = ""
    #: step name -> step status after the input; None when not recorded (not compared)
    steps: Mapping[str, str] | None = field(default_factory=dict)
    #: the commands sent, as `participant/CommandType step#attempt`; None when not recorded
    commands: tuple[str, ...] | None = None

    @classmethod
    def of(cls, t: Transition, names: Sequence[str]) -> Outcome:
        """The summary of a transition; `names` are the definition's step names, in order."""
        if t.state is None:
            return cls(t.outcome)
        steps = {n: str(s.status) for n, s in zip(names, t.state.steps, strict=False)}
        sent = tuple(f"{c.participant}/{c.command_type} {c.step}#{c.attempt}" for c in t.commands)
        return cls(t.outcome, str(t.state.status), steps, sent)

    def describe(self, commands: bool = False) -> str:
        if not self.status:
            return self.outcome
        text = f"{self.outcome}, saga {self.status}"
        if self.steps is not None:
            text += f" [{', '.join(f'{k}={v}' for k, v in self.steps.items())}]"
        if commands and self.commands is not None:
            text += f", sent [{', '.join(self.commands) or 'nothing'}]"
        return text


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
        sent = self.reason.startswith("sent")
        return (
            f"input {self.index} ({describe_event(self.event)}): {self.reason}; recorded "
            f"{self.expected.describe(sent)}, replayed {self.got.describe(sent)} ({self.note})"
        )


def _difference(expected: Outcome, got: Outcome) -> str:
    if expected.outcome != got.outcome:
        return f"outcome {got.outcome}, recorded {expected.outcome}"
    if expected.outcome == "rejected":
        return ""
    if expected.status != got.status:
        return f"saga status {got.status or 'none'}, recorded {expected.status or 'none'}"
    if expected.steps is not None and got.steps is not None:
        for name in sorted(set(expected.steps) | set(got.steps)):
            want, have = expected.steps.get(name), got.steps.get(name)
            if want != have:
                return f"step {name} is {have or 'absent'}, recorded {want or 'absent'}"
    if expected.commands is not None and got.commands is not None:
        for want_cmd, have_cmd in zip_longest(expected.commands, got.commands):
            if want_cmd != have_cmd:
                return f"sent {have_cmd or 'nothing more'}, recorded {want_cmd or 'nothing more'}"
    return ""


def decisions(
    definition: SagaDefinition, inputs: Iterable[tuple[Event, int]]
) -> Iterator[tuple[Transition, Outcome]]:
    """Each input (event, now_ms) decided in turn under `definition`, from no saga: the
    transition and its summary. Lazy, so a caller may stop at the first difference."""
    names = [s.name for s in definition.steps]
    registry = {definition.name: definition}
    state: SagaState | None = None
    for event, now_ms in inputs:
        t = decide(state, event, now_ms, registry, definition)
        yield t, Outcome.of(t, names)
        if t.outcome == "applied":
            state = t.state


def replay(definition: SagaDefinition, inputs: Iterable[Recorded]) -> Divergence | None:
    """Run the recorded inputs through `decide` under `definition`; the first divergence, or
    None when every input is decided as recorded."""
    recorded = list(inputs)
    decided = decisions(definition, ((r.event, r.now_ms) for r in recorded))
    for index, (rec, (t, got)) in enumerate(zip(recorded, decided, strict=False)):
        reason = _difference(rec.expected, got)
        if reason:
            return Divergence(index, rec.event, rec.expected, got, reason, t.note)
    return None
