"""Named crash points: a process SIGKILLs itself at a chosen gap, so a test can prove what a
crash exactly there leaves behind (tests/test_crash_points*.py, docs/RELIABILITY.md).

Off unless the environment says otherwise, read once when this module is imported (that is, at
the start of every orchestrator and worker process):

- `SAGA_CRASH_AT=name[,name...]`: the points that fire; each must be one of `POINTS`;
- `SAGA_CRASH_AFTER=N`: let each named point pass N times, fire on hit N+1 (default 0);
- `SAGA_CRASH_MARKER=path`: append the marker line there too (it always goes to stderr):
  `crash point <name> fired (pid <pid>, hit <n>)`, then the point's own context, if it gives
  one (`relay.after_publish`: ` partition=<p> sent=<n> acked=<n>`).

An unknown name or a count that is not a non-negative integer is found at import and raised by
`check()`, which the CLI calls before any command (one line, exit 2) and the orchestrator and
worker entry points call at start-up: a misspelt point must not quietly test nothing.
Firing writes the marker line, then sends SIGKILL to the process itself: no `finally`, no
`atexit`, no flush of anything buffered, exactly as an OOM kill or a pulled plug. When nothing
is armed, `crash_point` is one test of an empty set (the points sit on the daemon's and the
SDK's hot paths).

Environment read here and not through the settings models on purpose: this is a test switch
that must reach every process (orchestrator copies, workers) without a setting in each.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["POINTS", "CrashPlan", "CrashPointError", "crash_point", "parse"]

#: every crash point, where it sits:
POINTS: tuple[str, ...] = (
    # orchestrator/engine/daemon.py: a batch's steps are in Redis, their commands not yet sent
    "orchestrator.after_step",
    # orchestrator/engine/daemon.py: the batch's commands are acked, its offsets not committed
    "orchestrator.after_publish",
    # orchestrator/engine/daemon.py: inside the revoke of a partition (a rebalance under way)
    "orchestrator.in_revoke",
    # orchestrator/engine/relay.py: one partition's outbox entries re-published, not yet deleted
    # (the relay serves its partitions at once: the others' sends may still be on their way)
    "relay.after_publish",
    # participants/handling.py: the handler's effect and stored outcome committed, no reply yet
    "participant.after_effect",
    # participants/scripts.py: one round trip of a batch's commits (effects and outcomes) came
    # back, no reply of theirs sent; more commits of the same batch may follow
    "participant.between_commits",
)

ENV_AT = "SAGA_CRASH_AT"
ENV_AFTER = "SAGA_CRASH_AFTER"
ENV_MARKER = "SAGA_CRASH_MARKER"


class CrashPointError(ValueError):
    """The crash-point environment variables name something that does not exist."""


@dataclass
class CrashPlan:
    """Which points fire, after how many passes, and where the marker line goes."""

    armed: frozenset[str] = frozenset()
    after: int = 0
    marker: str | None = None
    hits: dict[str, int] = field(default_factory=dict)

    def should_fire(self, name: str) -> bool:
        """Count a hit of an armed point; True on the hit that fires."""
        n = self.hits.get(name, 0) + 1
        self.hits[name] = n
        return n > self.after


def parse(env: Mapping[str, str]) -> CrashPlan:
    """The plan the environment asks for; `CrashPointError` naming the bad variable."""
    raw_at = env.get(ENV_AT, "")
    raw_after = env.get(ENV_AFTER)
    names = [n.strip() for n in raw_at.split(",")]
    if not raw_at.strip():
        if raw_after is not None:
            raise CrashPointError(f"{ENV_AFTER} is set but {ENV_AT} names no crash point")
        return CrashPlan()
    if "" in names:
        raise CrashPointError(f"{ENV_AT}={raw_at!r}: an empty name in the list")
    unknown = [n for n in names if n not in POINTS]
    if unknown:
        raise CrashPointError(
            f"{ENV_AT}: unknown crash point(s) {', '.join(map(repr, unknown))}; "
            f"the known ones are {', '.join(POINTS)}"
        )
    after = 0
    if raw_after is not None:
        text = raw_after.strip()
        if not text.isdigit() or not text.isascii():
            raise CrashPointError(f"{ENV_AFTER}={raw_after!r}: not a non-negative integer")
        after = int(text)
    return CrashPlan(frozenset(names), after, env.get(ENV_MARKER) or None)


try:
    _plan, _error = parse(os.environ), None
except CrashPointError as exc:  # kept for check(): an import must not fail half-way
    _plan, _error = CrashPlan(), exc
_armed = _plan.armed  # a module global of its own: the hot path reads nothing else


def check() -> None:
    """Raise the `CrashPointError` the environment caused, if any (called at start-up)."""
    if _error is not None:
        raise _error


def crash_point(name: str, **where: object) -> None:
    """SIGKILL this process here when the environment armed `name` (see the module doc).
    `where` (say `partition=3`) is appended to the marker line as `partition=3`: where a point
    sits in concurrent work, a test learns from it which work the kill fell after."""
    if _armed and name in _armed and _plan.should_fire(name):
        _fire(name, _plan, where)


def _fire(name: str, plan: CrashPlan, where: Mapping[str, object]) -> None:
    head = f"crash point {name} fired (pid {os.getpid()}, hit {plan.hits[name]})"
    line = "".join([head, *(f" {k}={v}" for k, v in where.items()), "\n"]).encode()
    if plan.marker:
        # unbuffered append: the line is in the kernel before the kill, so it survives it
        fd = os.open(plan.marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    os.write(2, line)
    os.kill(os.getpid(), signal.SIGKILL)
