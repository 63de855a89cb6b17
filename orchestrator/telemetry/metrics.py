"""Counters and a step-latency histogram, rendered in the Prometheus text format, and the
faults a copy is living through right now (for `/readyz`).

Counters live in the process (they restart at zero, as Prometheus counters may); gauges that
describe the whole system (sagas by state, stuck sagas, outbox depth) are read from Redis at
scrape time and handed to `render` in a `Gauges`, so every orchestrator copy reports the same
numbers for them; a gauge whose read failed is left out, never shown as 0.
`promtool check metrics` accepts the output (`tests/test_engine_metrics.py`).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from infra.errors import describe, kind
from orchestrator.core.model import Status, Transition

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: saga_sagas_stuck counts up to this many, so a scrape reads a bounded number of sagas; the
#: value itself means "at least this many"
STUCK_COUNT_CAP = 10_000

#: (attribute, metric name, help) of every counter `render` writes
COUNTERS = (
    ("started", "saga_sagas_started_total", "Sagas started."),
    ("completed", "saga_sagas_completed_total", "Sagas that completed every step."),
    ("failed", "saga_sagas_failed_total", "Sagas that ended failed, their compensation finished."),
    ("compensating", "saga_sagas_compensated_total", "Sagas that began compensating."),
    (
        "needs_intervention",
        "saga_sagas_needs_intervention_total",
        "Sagas whose compensation could not finish; a person must act.",
    ),
    ("inputs", "saga_inputs_total", "Inputs decoded (starts, replies, timers, operator commands)."),
    (
        "duplicates",
        "saga_inputs_duplicate_total",
        "Inputs recognised as seen before: a start or operator command again, or a reply or"
        " timer for an attempt the saga no longer waits for.",
    ),
    (
        "duplicate_starts",
        "saga_starts_duplicate_total",
        "Starts for a saga id already used (running, finished, or expired): ignored.",
    ),
    (
        "stray_replies",
        "saga_replies_stray_total",
        "Replies that answer no command the saga issued (forged or misrouted): ignored.",
    ),
    ("dead_lettered", "saga_dead_lettered_total", "Records sent to the dead-letter topic."),
    (
        "state_cache_hits",
        "saga_state_cache_hits_total",
        "Sagas decided on the state this copy cached when it last stepped them (no read).",
    ),
    (
        "state_cache_misses",
        "saga_state_cache_misses_total",
        "Sagas read from Redis before deciding (not cached here, or dropped after a conflict).",
    ),
    ("commands_sent", "saga_commands_sent_total", "Commands published to participants."),
    ("timers_fired", "saga_timers_fired_total", "Timer events produced (timeouts, retries)."),
    (
        "outbox_republished",
        "saga_outbox_republished_total",
        "Commands re-published from the outbox after a crash or a slow publish.",
    ),
    (
        "relay_entry_errors",
        "saga_relay_entry_errors_total",
        "Timers or outbox entries the relay could not send; each is retried on its own backoff.",
    ),
    (
        "relay_restarts",
        "saga_relay_restarts_total",
        "Relay rounds ended by an unexpected error (logged with its traceback) and run again.",
    ),
    (
        "relay_fenced",
        "saga_relay_fenced_total",
        "Relay reads refused because another copy took the partition since (this copy was"
        " paused or cut off while its partitions moved); nothing was fired.",
    ),
)

#: the infrastructure failures every copy reports from the start (at 0), by (source, kind)
KNOWN_FAULTS = tuple(
    ("redis", k)
    for k in (
        "connection",
        "timeout",
        "OOM",
        "READONLY",
        "BUSY",
        "LOADING",
        "MASTERDOWN",
        "TRYAGAIN",
    )
)


@dataclass
class Fault:
    """A failure still going on: what it is and since when (monotonic seconds)."""

    text: str
    since_s: float


class Faults:
    """What each part of a copy ("loop", "relay") is failing at right now; cleared when that
    part succeeds again. `/readyz` lists them."""

    def __init__(self) -> None:
        self._now: dict[str, Fault] = {}

    def failing(self, part: str, exc: BaseException) -> None:
        text = describe(exc)
        held = self._now.get(part)
        since = held.since_s if held else time.monotonic()
        self._now[part] = Fault(text, since)

    def ok(self, part: str) -> None:
        self._now.pop(part, None)

    def problems(self) -> list[str]:
        now = time.monotonic()
        out: list[str] = []
        for f in self._now.values():
            line = f"{f.text} (since {now - f.since_s:.0f}s)"
            if line not in out:
                out.append(line)
        return out


@dataclass
class Gauges:
    """Point-in-time values gathered at scrape time; None where the source did not answer."""

    sagas_by_state: dict[str, int] | None = None
    outbox_depth: int | None = None
    #: sagas not final without a transition for longer than `stuck_after_s` (at most
    #: STUCK_COUNT_CAP)
    sagas_stuck: int | None = None
    #: (topic, partition) -> records not yet processed by this copy
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    assigned_partitions: int = 0
    redis_up: bool = True
    #: what /readyz would answer (200: True); False unless someone checked
    ready: bool = False


@dataclass
class Metrics:
    inputs: int = 0
    duplicates: int = 0
    duplicate_starts: int = 0
    stray_replies: int = 0
    dead_lettered: int = 0
    commands_sent: int = 0
    timers_fired: int = 0
    outbox_republished: int = 0
    #: every retried failure; by (source, kind) in `infra_errors_by_kind`
    infra_errors: int = 0
    relay_entry_errors: int = 0
    relay_restarts: int = 0
    relay_fenced: int = 0
    state_cache_hits: int = 0
    state_cache_misses: int = 0
    #: partitions whose relay work this copy holds (taken in Redis), and their lag: seconds
    #: the oldest due timer or outbox entry past its sweep age has waited, at the last read
    relay_partitions: int = 0
    relay_lag_s: dict[int, float] = field(default_factory=dict)
    infra_errors_by_kind: dict[tuple[str, str], int] = field(
        default_factory=lambda: dict.fromkeys(KNOWN_FAULTS, 0)
    )
    faults: Faults = field(default_factory=Faults)
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
        if t.stray:
            self.stray_replies += 1
        if t.duplicate:  # recorded once as ignored; exact copies come back as "duplicate"
            self.duplicates += 1
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

    def infra_error(self, exc: BaseException, key: tuple[str, str] | None = None) -> None:
        """Count one retried failure, by `key` (source, kind), else as `infra.errors.kind`
        names it."""
        self.infra_errors += 1
        key = key or kind(exc)
        self.infra_errors_by_kind[key] = self.infra_errors_by_kind.get(key, 0) + 1

    def observe_step_latency(self, seconds: float) -> None:
        self.step_latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.step_latency_sum_s += seconds

    def render(self, gauges: Gauges | None = None) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        g = gauges or Gauges()
        out: list[str] = []
        for attr, name, text in COUNTERS:
            _family(out, name, "counter", text)
            out.append(f"{name} {getattr(self, attr)}")
        name = "saga_infra_errors_total"
        _family(out, name, "counter", "Kafka or Redis failures, retried with backoff, by kind.")
        for (source, what), n in sorted(self.infra_errors_by_kind.items()):
            out.append(f'{name}{{source="{_esc(source)}",kind="{_esc(what)}"}} {n}')
        name = "saga_step_latency_seconds"
        _family(out, name, "histogram", "Time from a step's command to its applied reply.")
        running = 0
        for bound, count in zip(LATENCY_BUCKETS_S, self.step_latency_counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        running += self.step_latency_counts[-1]
        out.append(f'{name}_bucket{{le="+Inf"}} {running}')
        out.append(f"{name}_sum {self.step_latency_sum_s:.6f}")
        out.append(f"{name}_count {running}")
        if g.sagas_by_state is not None:
            _family(out, "saga_sagas", "gauge", "Sagas by state, from the Redis state indexes.")
            for state, n in sorted(g.sagas_by_state.items()):
                out.append(f'saga_sagas{{state="{state}"}} {n}')
        if g.outbox_depth is not None:
            _family(out, "saga_outbox_depth", "gauge", "Commands written but not yet acknowledged.")
            out.append(f"saga_outbox_depth {g.outbox_depth}")
        if g.sagas_stuck is not None:  # absent, never 0, when Redis did not answer
            name = "saga_sagas_stuck"
            about = (
                "Sagas not final and without a transition for longer than SAGA_STUCK_AFTER_S "
                f"(as `saga stuck`); counted up to {STUCK_COUNT_CAP}, which means at least that."
            )
            _family(out, name, "gauge", about)
            out.append(f"{name} {min(g.sagas_stuck, STUCK_COUNT_CAP)}")
        _family(
            out, "saga_consumer_lag", "gauge", "Input records not yet processed, per partition."
        )
        for (topic, partition), lag in sorted(g.consumer_lag.items()):
            out.append(f'saga_consumer_lag{{topic="{_esc(topic)}",partition="{partition}"}} {lag}')
        name = "saga_consumer_lag_records"
        _family(out, name, "gauge", "Input records not yet processed, all partitions of this copy.")
        out.append(f"{name} {sum(g.consumer_lag.values())}")
        _family(
            out,
            "saga_assigned_partitions",
            "gauge",
            "Partitions this copy owns, each counted once (a partition number of both input"
            " topics counts one).",
        )
        out.append(f"saga_assigned_partitions {g.assigned_partitions}")
        name = "saga_relay_partitions"
        _family(out, name, "gauge", "Partitions whose timers and outbox this copy's relay serves.")
        out.append(f"{name} {self.relay_partitions}")
        name = "saga_relay_lag_seconds"
        about = (
            "Per partition this copy's relay serves: how long the oldest due timer, or outbox"
            " entry past its sweep age, had waited at the relay's last read (0: none)."
        )
        _family(out, name, "gauge", about)
        for part, seconds in sorted(self.relay_lag_s.items()):
            out.append(f'{name}{{partition="{part}"}} {seconds:.3f}')
        _family(out, "saga_redis_up", "gauge", "1 when Redis answered the scrape.")
        out.append(f"saga_redis_up {1 if g.redis_up else 0}")
        _family(out, "saga_ready", "gauge", "1 when /readyz would answer 200, else 0.")
        out.append(f"saga_ready {1 if g.ready else 0}")
        return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, text: str) -> None:
    out.append(f"# HELP {name} {text}")
    out.append(f"# TYPE {name} {kind}")


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
