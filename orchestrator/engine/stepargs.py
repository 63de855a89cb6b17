"""The arguments of `lua/step.lua`, by name, built in one place.

The script reads its keys through the names in `StepKeys` (its `KEY_NAMES` table lists them in
the order they are passed) and its scalar arguments as one JSON object whose members are the
fields of `StepArgs`; the outbox entries follow as raw (key, value, headers) triples, because
Avro values are binary and JSON cannot carry them. `tests/test_step_args.py` holds the two sides
to each other: a name used in the Lua but not built here, or built here and never read there,
fails it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import orjson


@dataclass(frozen=True)
class StepKeys:
    """Every key one step touches (KEYS, in this order)."""

    saga: str  # the hash a person reads with HGETALL
    history: str  # list of transitions (orchestrator/engine/history.py), capped
    seen: str  # ids of inputs already applied
    outbox: str  # commands not yet acknowledged by Kafka
    timers: str  # sorted set of due timers
    old_index: str  # the state index the saga leaves
    new_index: str  # the state index it enters
    tombstone: str  # keeps a finished saga's id taken after its keys expired

    def as_list(self) -> list[str]:
        # by name, not `astuple`: that deep-copies, a measurable cost on every step
        return [getattr(self, name) for name in _KEY_NAMES]


@dataclass(frozen=True)
class StepArgs:
    """The scalar arguments of one step (ARGV[1], as a JSON object)."""

    message_id: str  # dedupe id; '' = no dedupe
    expected_version: int  # the saga's version this step was decided on (no stale writer)
    applied: bool  # False: the input is only recorded (history, seen), the saga is unchanged
    saga_id: str
    entered_ms: int  # when the saga entered its (new) state: the index score
    state_changed: bool
    final: bool  # completed/failed/needs-intervention: the keys get the retention TTL
    retention_s: int  # 0 = keep forever
    tombstone_retention_s: int  # how long the id stays taken; 0 = no tombstone
    fields: list[str]  # hash fields that changed, as field, value, ...
    drop_fields: list[str]  # hash fields to remove (back at their default, or an older layout)
    history: str  # the history entry (`history.encode`); '' = none
    history_cap: int  # entries a saga's history keeps
    remember: str  # 'start': the id goes in the hash; 'seen': in the seen set; '': not kept
    #: an ignored duplicate (`Transition.duplicate`): when the history already holds an entry
    #: for message_id, this is an exact copy and nothing is written (the step returns {0})
    skip_recorded: bool
    seen_cap: int  # ids the seen set holds at most
    timers: list[str]  # timers to set, as score, member, ...
    cancel_timers: list[str]  # timer members to remove
    #: the entry is what `history.derive` rebuilds from the new hash: written only to a list
    #: that exists (a saga that only went forward has none)
    history_omit: bool = False
    #: the entries `history.derive` rebuilds from the hash before this step: written first
    #: when the saga has no list yet, and what the duplicate scan reads then
    history_backfill: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        # orjson writes a dataclass's fields itself: no `asdict` (a deep copy) per step
        return orjson.dumps(self)


def arg_names() -> list[str]:
    return [f.name for f in fields(StepArgs)]


def key_names() -> list[str]:
    return [f.name for f in fields(StepKeys)]


_KEY_NAMES = key_names()


def script_argv(args: StepArgs, outbox: list[tuple[bytes, bytes, bytes]]) -> list[Any]:
    """ARGV: the named arguments, then each outbox entry's key, value and headers."""
    argv: list[Any] = [args.encode()]
    for key, value, headers in outbox:
        argv += [key, value, headers]
    return argv
