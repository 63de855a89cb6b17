"""Saga definitions as code: a named, versioned list of steps, each with its compensation.

A saga type is registered from a Python module named in configuration
(`SAGA_SAGA_MODULES='["mycompany.sagas"]'`): the module exposes `SAGAS`, a list of
`SagaDefinition` (see `orchestrator.engine.sagas`). The shipped order saga is such a module:
`participants.samples.order.saga`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


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

    def index(self, step: str) -> int | None:
        for i, s in enumerate(self.steps):
            if s.name == step:
                return i
        return None


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

    def __getitem__(self, name: str) -> SagaDefinition:
        return self._latest[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._latest)

    def __len__(self) -> int:
        return len(self._latest)
