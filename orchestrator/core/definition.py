"""Saga definitions as code: a named, versioned list of steps, each with its compensation.

A saga type is registered from a Python module named in configuration
(`SAGA_SAGA_MODULES='["mycompany.sagas"]'`): the module exposes `SAGAS`, a list of
`SagaDefinition` (see `orchestrator.engine.sagas`). The shipped order saga is such a module:
`participants.samples.order.saga`.

Beyond a straight line (docs/WORKFLOWS.md):
- `parallel("book", a, b, c)`: consecutive steps of one `group` form a STAGE whose steps run
  together; a step with no group is a stage of its own. `steps` stays a flat tuple, so the
  saga's state keeps one entry per step.
- `StepDef.when`: a `Condition` on the saga data, evaluated when the step's stage begins;
  false skips the step (never run, never compensated).
- `wait_for("approval", "approve")`: a WAIT step that sends nothing and waits for a signal;
  a reject signal or its timeout fails it and the saga compensates.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from orchestrator.core.conditions import CONDITION_TYPES, Condition

#: signal names (the contract of issue 13): what `saga signal <id> <name>` may name
SIGNAL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: a group name is shown in status and the history; it follows the wire's name pattern
GROUP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
#: a Kafka topic name (`StepDef.topic`); the same rule as `schemas.config.TOPIC_NAME`, which
#: the core may not import (a test pins that the two agree)
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: a wait step waits this long by default: approvals are made by people
DEFAULT_WAIT_S = 24 * 3600.0


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap. `max_attempts` counts the first try."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.5
    multiplier: float = 2.0
    max_backoff_s: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        numbers = (self.initial_backoff_s, self.multiplier, self.max_backoff_s, self.jitter)
        if not all(_finite(n) for n in numbers) or not _whole(self.max_attempts):
            raise ValueError(f"invalid retry policy {self}: every value must be a finite number")
        if self.max_attempts < 1 or self.initial_backoff_s < 0 or self.multiplier < 1:
            raise ValueError(f"invalid retry policy {self}")
        if not 0 <= self.jitter <= 1 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"invalid retry policy {self}")

    def backoff_s(self, failed_attempt: int, seed: str) -> float:
        """Delay before the attempt after `failed_attempt`; jitter comes from a seeded rng so
        that the core stays deterministic (replaying an input gives the same timer)."""
        base = min(
            self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (failed_attempt - 1)
        )
        spread = random.Random(seed).uniform(-self.jitter, self.jitter)
        return min(self.max_backoff_s, max(0.0, base * (1 + spread)))


@dataclass(frozen=True)
class StepDef:
    name: str
    participant: str
    action: str
    compensation: str
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    compensation_timeout_s: float = 30.0
    compensation_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            max_attempts=5, initial_backoff_s=1.0, max_backoff_s=60.0
        )
    )
    #: consecutive steps with the same non-empty group run together as one stage
    group: str = ""
    #: evaluated when the step's stage begins; false skips the step
    when: Condition | None = None
    #: non-empty: a wait step, completed by the signal of this name (see `wait_for`)
    signal: str = ""
    #: signals that fail a wait step at once (and the saga compensates)
    reject_signals: tuple[str, ...] = ()
    #: the Kafka topic of this step's commands (both directions) when the orchestrator runs
    #: with per-participant command topics; "" = the participant's, `<commands topic>.<name>`
    topic: str = ""

    @property
    def is_wait(self) -> bool:
        return self.signal != ""

    def __post_init__(self) -> None:
        timeouts = (self.timeout_s, self.compensation_timeout_s)
        if not all(_finite(t) and t > 0 for t in timeouts):
            raise ValueError(
                f"step {self.name}: timeouts must be positive and finite (timeout_s="
                f"{self.timeout_s!r}, compensation_timeout_s={self.compensation_timeout_s!r})"
            )
        if not isinstance(self.retry, RetryPolicy) or not isinstance(
            self.compensation_retry, RetryPolicy
        ):
            raise ValueError(f"step {self.name}: retry and compensation_retry must be RetryPolicy")
        self._check_workflow()

    def _check_workflow(self) -> None:
        """The issue-13 fields; names, participants and commands are the wire's to check
        (`orchestrator.engine.sagas.check_definition`), as they always were."""
        at = f"step {_shown(self.name)}"
        if not isinstance(self.group, str) or (self.group and not GROUP_NAME.match(self.group)):
            raise ValueError(
                f"{at}: group {_shown(self.group)} must be empty or a name (a letter, then up "
                "to 63 letters, digits, '_', '.' or '-')"
            )
        if self.when is not None and not isinstance(self.when, CONDITION_TYPES):
            raise ValueError(
                f"{at}: when must be a condition (Compare, AllOf, AnyOf or Not), not "
                f"{type(self.when).__name__}: conditions are data, so decisions replay"
            )
        if isinstance(self.reject_signals, str) or not isinstance(
            self.reject_signals, tuple | list
        ):
            raise ValueError(
                f"{at}: reject_signals must be a tuple of signal names, not "
                f"{_shown(self.reject_signals)}"
            )
        if not isinstance(self.topic, str) or (
            self.topic and (not TOPIC_NAME.match(self.topic) or self.topic in (".", ".."))
        ):
            raise ValueError(
                f"{at}: topic {_shown(self.topic)} must be empty or a Kafka topic name (1 to 249 "
                "letters, digits, '.', '_' or '-'; not '.' or '..')"
            )
        # a tuple keeps the step hashable and immutable, whichever sequence was given
        object.__setattr__(self, "reject_signals", tuple(self.reject_signals))
        if not isinstance(self.signal, str):
            raise ValueError(f"{at}: signal must be a signal name, not {_shown(self.signal)}")
        if not self.signal:
            if self.reject_signals:
                raise ValueError(
                    f"{at}: reject_signals need a signal (only a wait step takes signals; "
                    "build it with wait_for)"
                )
            return
        for name in (self.signal, *self.reject_signals):
            if not isinstance(name, str) or not SIGNAL_NAME.match(name):
                raise ValueError(
                    f"{at}: signal name {_shown(name)} must be 1 to 64 letters, digits, '_', "
                    "'.' or '-'"
                )
        if self.signal in self.reject_signals:
            raise ValueError(f"{at}: signal {self.signal!r} both completes and rejects the step")
        if len(set(self.reject_signals)) != len(self.reject_signals):
            raise ValueError(f"{at}: reject_signals {self.reject_signals!r} repeat a name")
        sends = {
            "participant": self.participant,
            "action": self.action,
            "compensation": self.compensation,
            "topic": self.topic,
        }
        given = [f"{k} {_shown(v)}" for k, v in sends.items() if v != ""]
        if given:
            raise ValueError(
                f"{at} waits for signal {self.signal!r}, so it sends nothing: participant, "
                f"action, compensation and topic must be empty (got {', '.join(given)})"
            )


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    version: int
    steps: tuple[StepDef, ...]

    def __post_init__(self) -> None:
        if not _whole(self.version) or self.version < 1:
            raise ValueError(f"saga {self.name}: the version must be a whole number >= 1")
        if not all(isinstance(s, StepDef) for s in self.steps):
            raise ValueError(f"saga {self.name}: steps must be StepDef")
        names = [s.name for s in self.steps]
        if not names:
            raise ValueError(f"saga {self.name} has no steps")
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name} has duplicate step names")
        self._check_stages()

    def _check_stages(self) -> None:
        seen: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            first = seen.setdefault(s.group, i) if s.group else i
            if s.group and first != i and self.steps[i - 1].group != s.group:
                raise ValueError(
                    f"saga {self.name}: group {s.group!r} is split in two runs (step "
                    f"{self.steps[first].name!r}, then {s.name!r} after "
                    f"{self.steps[i - 1].name!r}); a group's steps must be consecutive"
                )
        for stage in self.stages:
            accepts: dict[str, str] = {}
            rejects: dict[str, str] = {}
            for i in stage:
                s = self.steps[i]
                if s.signal in accepts:
                    raise ValueError(
                        f"saga {self.name}: steps {accepts[s.signal]!r} and {s.name!r} run "
                        f"together and both wait for signal {s.signal!r}; one signal would "
                        "answer both"
                    )
                if s.signal:
                    accepts[s.signal] = s.name
                rejects.update({r: s.name for r in s.reject_signals})
            for name, step in accepts.items():
                if name in rejects:
                    raise ValueError(
                        f"saga {self.name}: signal {name!r} completes step {step!r} and rejects "
                        f"step {rejects[name]!r}, which run together"
                    )

    @cached_property
    def stages(self) -> tuple[range, ...]:
        """The steps' indexes, stage by stage (a stage: one step, or one group's run)."""
        out: list[range] = []
        start = 0
        for i in range(1, len(self.steps) + 1):
            if (
                i == len(self.steps)
                or not self.steps[i].group
                or (self.steps[i].group != self.steps[start].group)
            ):
                out.append(range(start, i))
                start = i
        return tuple(out)

    @cached_property
    def _stage_at(self) -> tuple[int, ...]:
        return tuple(k for k, stage in enumerate(self.stages) for _ in stage)

    def stage_of(self, step: int) -> int:
        """The number of the stage that step index `step` belongs to."""
        return self._stage_at[step]

    def index(self, step: str) -> int | None:
        for i, s in enumerate(self.steps):
            if s.name == step:
                return i
        return None


def parallel(group: str, *steps: StepDef) -> tuple[StepDef, ...]:
    """The steps as one parallel stage: `steps=(a, *parallel("book", flight, hotel), pay)`."""
    if not steps or not all(isinstance(s, StepDef) for s in steps):
        raise ValueError(f"parallel({group!r}): give one or more StepDef")
    if not isinstance(group, str) or not GROUP_NAME.match(group):
        raise ValueError(
            f"parallel({_shown(group)}): a group name is a letter, then up to 63 letters, "
            "digits, '_', '.' or '-'"
        )
    for s in steps:
        if s.group not in ("", group):
            raise ValueError(f"parallel({group!r}): step {s.name!r} is in group {s.group!r}")
    return tuple(replace(s, group=group) for s in steps)


def wait_for(
    name: str,
    signal: str,
    reject: tuple[str, ...] = ("reject",),
    timeout_s: float = DEFAULT_WAIT_S,
    when: Condition | None = None,
    group: str = "",
) -> StepDef:
    """A wait step: completed by `signal` (its result is the signal's data), failed at once by
    any of `reject`, failed when `timeout_s` passes with neither. It sends nothing, has no
    retries and nothing to compensate."""
    return StepDef(
        name,
        "",
        "",
        "",
        timeout_s=timeout_s,
        retry=RetryPolicy(max_attempts=1),
        group=group,
        when=when,
        signal=signal,
        reject_signals=reject,
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


class Registry(Mapping[str, SagaDefinition]):
    """Saga types by name. Older versions stay registered so in-flight sagas keep their steps."""

    def __init__(self, definitions: Iterable[SagaDefinition] = ()) -> None:
        self._latest: dict[str, SagaDefinition] = {}
        self._versions: dict[tuple[str, int], SagaDefinition] = {}
        for d in definitions:
            self.register(d)

    def register(self, definition: SagaDefinition) -> None:
        self._versions[(definition.name, definition.version)] = definition
        latest = self._latest.get(definition.name)
        if latest is None or definition.version >= latest.version:
            self._latest[definition.name] = definition

    def version(self, name: str, version: int) -> SagaDefinition | None:
        return self._versions.get((name, version))

    def all_versions(self) -> list[SagaDefinition]:
        """Every registered definition, older versions included."""
        return list(self._versions.values())

    def __getitem__(self, name: str) -> SagaDefinition:
        return self._latest[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._latest)

    def __len__(self) -> int:
        return len(self._latest)
