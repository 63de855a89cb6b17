"""Counters and a step-latency histogram, rendered in the Prometheus text format."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from orchestrator.core.model import Status, Transition

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Metrics:
    inputs: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    commands_sent: int = 0
    timers_fired: int = 0
    outbox_republished: int = 0
    infra_errors: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    compensating: int = 0
    needs_intervention: int = 0
    step_latency_counts: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1)
    )
    step_latency_sum_s: float = 0.0

    def observe(self, before: str | None, t: Transition, is_start: bool) -> None:
        state = t.state
        if state is None or t.outcome != "applied":
            return
        if is_start and before is None:
            self.started += 1
        if before != state.status.value:
            if state.status == Status.COMPLETED:
                self.completed += 1
            elif state.status == Status.FAILED:
                self.failed += 1
            elif state.status == Status.COMPENSATING:
                self.compensating += 1
            elif state.status == Status.NEEDS_INTERVENTION:
                self.needs_intervention += 1

    def observe_step_latency(self, seconds: float) -> None:
        self.step_latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.step_latency_sum_s += seconds
