"""Recorded histories for `saga replay`: read from a golden file or rebuilt from a saga in Redis,
and written back as a golden file (`--export`). The replay itself is `orchestrator.core.replay`.

A golden file is JSON Lines. The first line names the saga; each next line is one input, in the
order it was decided, with what it did then:

    {"format": "saga-history/1", "saga_id": "order-7", "saga_type": "order_fulfillment",
     "definition_version": 1}
    {"now_ms": 1767261600123, "input": {"type": "start", "saga_id": "order-7", ...},
     "outcome": "applied", "status": "pending", "steps": {"reserve_inventory": "running", ...},
     "commands": ["inventory/ReserveItems reserve_inventory#1"]}
    {"now_ms": 1767261600140, "input": {"type": "reply", "kind": "failed",
     "step": "process_payment", "attempt": 1, "retryable": true, ...}, "outcome": "applied", ...}

Input types: `start` (saga_id, saga_type, data, correlation_id, traceparent), `reply` (kind,
step, attempt, compensation, retryable, reason, result, command_id), `timer` (kind, step, attempt,
compensation), `operator` (action, step, reason, operator), `signal` (name, signal_id, data,
sender). `steps` and `commands` may be null or left out (not compared); `at` and `note` are for
people and not read.

From Redis, the inputs are rebuilt from the saga's history entries (at, event, outcome, state,
note, input id): the note begins with the input in words (`describe_event`: `failed
process_payment#1 retryable`, `timeout timer hotel#2`, `signal approve from ada`, `operator
retry hotel by ada`), the start's data comes from the hash. What the history does not keep (a
reply's result and reason, a signal's data, an operator's reason) is left empty: no decision
depends on it. Each entry's outcome and saga status are compared; step statuses only after the
last input, against the hash; commands not at all (the history does not keep them). `--export`
fills both in by deciding the history again under the saga's own definition, once that agrees
with everything recorded.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import (
    Event,
    Operator,
    Reply,
    Signal,
    Start,
    Status,
    TimerDue,
    command_id,
)
from orchestrator.core.replay import Outcome, Recorded, decisions, replay
from orchestrator.engine.history import HISTORY_CAP
from orchestrator.engine.statecodec import from_iso, iso, join_long, read_step, step_names
from orchestrator.ops import InputError, RefusedError, validate

FORMAT = "saga-history/1"
#: a golden file larger than this is refused (a saga's history holds 64 entries)
MAX_FILE_BYTES = 10_000_000
_STATUSES = frozenset(s.value for s in Status)
_OUTCOMES = ("applied", "ignored", "rejected")


@dataclass(frozen=True)
class History:
    """A recorded history, from a file or from Redis."""

    saga_id: str
    saga_type: str
    definition_version: int
    inputs: list[Recorded]
    #: where it came from, in words ("file x.jsonl", "saga order-7 in Redis")
    source: str
    #: per input: the recorded time and note, shown and exported, never compared
    notes: list[tuple[str, str]]


# ---- definitions --------------------------------------------------------------------------------


def load_definition(spec: str) -> SagaDefinition:
    """`<module>:<NAME>`: the module attribute NAME holding a SagaDefinition, or else the saga
    type NAME in the module's SAGAS. The current directory is searched first, then the path."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise InputError(f"--definition {spec[:80]!r}: use <module>:<NAME>, e.g. mysagas:ORDER_V2")
    if os.getcwd() not in sys.path:  # as `python -m` would: a module next to you imports
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a user's module may fail in any way: one line, not a traceback
        raise InputError(
            f"--definition: module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from None
    found = getattr(module, name, None)
    if isinstance(found, SagaDefinition):
        return found
    sagas = getattr(module, "SAGAS", None)
    named = [s for s in sagas or () if isinstance(s, SagaDefinition) and s.name == name]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise InputError(
            f"--definition: module {module_name!r} has {len(named)} versions of saga {name!r} in "
            "SAGAS: name the attribute that holds the one to replay"
        )
    what = f"is a {type(found).__name__}" if found is not None else "does not exist"
    raise InputError(
        f"--definition: {module_name}.{name} {what}; NAME must be a SagaDefinition in the module "
        "or a saga type in its SAGAS"
    )


# ---- inputs as JSON ---------------------------------------------------------------------------

#: per input type: field -> (check, default); a default of ... means required
_Check = Callable[[object], bool]


def _text(v: object) -> bool:
    return isinstance(v, str)


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1_000_000_000


def _flag(v: object) -> bool:
    return isinstance(v, bool)


def _obj(v: object) -> bool:
    return isinstance(v, dict)


def _texts(v: object) -> bool:
    return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())


def _one_of(*choices: str) -> _Check:
    return lambda v: v in choices


def _opt_text(v: object) -> bool:
    return v is None or isinstance(v, str)


_FIELDS: dict[str, dict[str, tuple[_Check, Any, str]]] = {
    "start": {
        "saga_id": (_text, None, "a string"),
        "saga_type": (_text, None, "a string"),
        "data": (_obj, {}, "an object"),
        "correlation_id": (_text, "", "a string"),
        "traceparent": (_text, "", "a string"),
    },
    "reply": {
        "kind": (
            _one_of("completed", "failed", "compensated"),
            ...,
            "completed|failed|compensated",
        ),
        "step": (_text, ..., "a string"),
        "attempt": (_count, ..., "a whole number from 1"),
        "compensation": (_flag, False, "true or false"),
        "retryable": (_flag, False, "true or false"),
        "reason": (_text, "", "a string"),
        "result": (_texts, {}, "an object of strings"),
        "command_id": (_text, None, "a string"),
    },
    "timer": {
        "kind": (_one_of("timeout", "retry"), ..., "timeout|retry"),
        "step": (_text, ..., "a string"),
        "attempt": (_count, ..., "a whole number from 1"),
        "compensation": (_flag, False, "true or false"),
    },
    "operator": {
        "action": (
            _one_of("retry", "abort", "resume", "skip_compensation"),
            ...,
            "retry|abort|resume|skip_compensation",
        ),
        "step": (_opt_text, None, "a string or null"),
        "reason": (_text, "", "a string"),
        "operator": (_text, "", "a string"),
    },
    "signal": {
        "name": (_text, ..., "a string"),
        "signal_id": (_text, "", "a string"),
        "data": (_obj, {}, "an object"),
        "sender": (_text, "", "a string"),
    },
}


def event_of(doc: object, saga_id: str, saga_type: str) -> Event:
    """An input from its JSON object; InputError (without a location) when malformed."""
    if not isinstance(doc, dict):
        raise InputError("input must be an object")
    kind = doc.get("type")
    spec = _FIELDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise InputError(f"unknown input type {kind!r} (one of {', '.join(_FIELDS)})")
    unknown = sorted(set(doc) - set(spec) - {"type"})
    if unknown:
        raise InputError(f"{kind} input has no field {unknown[0]!r} (fields: {', '.join(spec)})")
    v: dict[str, Any] = {}
    for name, (check, default, want) in spec.items():
        if name not in doc:
            if default is ...:
                raise InputError(f"{kind} input needs {name!r} ({want})")
            v[name] = default
        elif not check(doc[name]):
            raise InputError(f"{kind} input: {name} must be {want}, not {doc[name]!r:.60}")
        else:
            v[name] = doc[name]
    if kind == "start":
        return Start(
            v["saga_id"] or saga_id,
            v["saga_type"] or saga_type,
            v["data"],
            v["correlation_id"],
            v["traceparent"],
        )
    if kind == "reply":
        cid = v["command_id"]
        if cid is None:  # hand-written: the command the saga issued for it
            cid = command_id(saga_id, v["step"], v["compensation"], v["attempt"])
        return Reply(
            v["kind"],
            v["step"],
            v["attempt"],
            v["compensation"],
            v["result"],
            v["retryable"],
            v["reason"],
            cid,
        )
    if kind == "timer":
        return TimerDue(v["kind"], v["step"], v["attempt"], v["compensation"])
    if kind == "operator":
        return Operator(v["action"], v["step"], v["reason"], v["operator"])
    return Signal(v["name"], v["signal_id"], v["data"], v["sender"])


def event_doc(e: Event) -> dict[str, Any]:
    """The JSON object of an input (inverse of `event_of`)."""
    if isinstance(e, Start):
        return {"type": "start", "saga_id": e.saga_id, "saga_type": e.saga_type, "data": e.data,
                "correlation_id": e.correlation_id, "traceparent": e.traceparent}  # fmt: skip
    if isinstance(e, Reply):
        return {"type": "reply", "kind": e.kind, "step": e.step, "attempt": e.attempt,
                "compensation": e.compensation, "retryable": e.retryable, "reason": e.reason,
                "result": e.result, "command_id": e.command_id}  # fmt: skip
    if isinstance(e, TimerDue):
        return {"type": "timer", "kind": e.kind, "step": e.step, "attempt": e.attempt,
                "compensation": e.compensation}  # fmt: skip
    if isinstance(e, Operator):
        return {"type": "operator", "action": e.action, "step": e.step, "reason": e.reason,
                "operator": e.operator}  # fmt: skip
    return {"type": "signal", "name": e.name, "signal_id": e.signal_id, "data": e.data,
            "sender": e.sender}  # fmt: skip


def outcome_doc(o: Outcome) -> dict[str, Any]:
    steps = dict(o.steps) if o.steps is not None else None
    sent = list(o.commands) if o.commands is not None else None
    return {"outcome": o.outcome, "status": o.status, "steps": steps, "commands": sent}


# ---- golden files -----------------------------------------------------------------------------


def _outcome(doc: dict[str, Any]) -> Outcome:
    outcome, status, steps = doc.get("outcome"), doc.get("status", ""), doc.get("steps")
    sent = doc.get("commands")
    if outcome not in _OUTCOMES:
        raise InputError(f"outcome must be one of {', '.join(_OUTCOMES)}, not {outcome!r:.40}")
    if outcome == "rejected":
        return Outcome("rejected")
    if status not in _STATUSES:
        raise InputError(
            f"status must be one of {', '.join(sorted(_STATUSES))}, not {status!r:.40}"
        )
    if steps is not None and not (
        isinstance(steps, dict) and all(isinstance(s, str) for s in steps.values())
    ):
        raise InputError("steps must be an object of step name -> status, or null")
    if sent is not None and not (isinstance(sent, list) and all(isinstance(c, str) for c in sent)):
        raise InputError("commands must be a list of strings, or null")
    return Outcome(outcome, status, steps, tuple(sent) if sent is not None else None)


_ENTRY_KEYS = {"now_ms", "at", "input", "outcome", "status", "steps", "commands", "note"}


def parse_file(raw: bytes, name: str) -> History:
    """A golden file (see the module's doc); InputError naming the line for anything wrong."""
    lines = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(f"{name}: empty: a golden history starts with its header line")
    n, first = lines[0]
    head = validate.json_object(first, f"{name}:{n}")
    if head.get("format") != FORMAT:
        raise InputError(
            f"{name}:{n}: not a saga history: the first line must be the header "
            f'{{"format": "{FORMAT}", "saga_id": ..., "saga_type": ..., "definition_version": ...}}'
        )
    sid, stype, version = head.get("saga_id"), head.get("saga_type"), head.get("definition_version")
    if not isinstance(sid, str) or not isinstance(stype, str) or not _count(version):
        raise InputError(
            f"{name}:{n}: the header needs saga_id and saga_type (strings) and "
            "definition_version (a whole number from 1)"
        )
    assert isinstance(version, int)
    inputs: list[Recorded] = []
    notes: list[tuple[str, str]] = []
    for n, line in lines[1:]:
        where = f"{name}:{n}"
        doc = validate.json_object(line, where)
        try:
            extra = sorted(set(doc) - _ENTRY_KEYS)
            if extra:
                raise InputError(
                    f"no field {extra[0]!r} (fields: {', '.join(sorted(_ENTRY_KEYS))})"
                )
            now = doc.get("now_ms")
            if not isinstance(now, int) or isinstance(now, bool) or now < 0:
                raise InputError(f"now_ms must be a whole number of milliseconds, not {now!r:.40}")
            event = event_of(doc.get("input"), sid, stype)
            inputs.append(Recorded(event, now, _outcome(doc)))
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}") from None
        notes.append((str(doc.get("at", "")), str(doc.get("note", ""))))
    return History(sid, stype, version, inputs, f"file {name}", notes)


def export_lines(h: History) -> str:
    """The golden file of a history (read back by `parse_file`)."""
    head = {"format": FORMAT, "saga_id": h.saga_id, "saga_type": h.saga_type,
            "definition_version": h.definition_version, "source": h.source}  # fmt: skip
    out = [orjson.dumps(head).decode()]
    for r, (at, note) in zip(h.inputs, h.notes, strict=True):
        doc = {"at": at or iso(r.now_ms), "now_ms": r.now_ms, "input": event_doc(r.event)}
        doc |= outcome_doc(r.expected) | {"note": note}
        out.append(orjson.dumps(doc).decode())
    return "\n".join(out) + "\n"


# ---- from Redis -------------------------------------------------------------------------------

_STEP = r"([A-Za-z][A-Za-z0-9_.\-]{0,63})"
_REPLY = re.compile(
    rf"^(completed|failed|compensated)( compensation)? {_STEP}#([0-9]{{1,9}})( retryable)?:"
)
_TIMER = re.compile(rf"^(timeout|retry)( compensation)? timer {_STEP}#([0-9]{{1,9}}):")
_OPERATOR = re.compile(
    rf"^operator (retry|abort|resume|skip_compensation)(?: (?!by ){_STEP})?(?: by ([^:]*))?(?::|$)"
)
_SIGNAL = re.compile(r"^signal ([A-Za-z0-9_.\-]{1,64})(?: from (.*?))?: ")
_STRAY_ID = re.compile(r"stray reply: command id ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") is not")


def entry_event(entry: Mapping[str, str], start: Start) -> Event:
    """The input a history entry records, from its note (ValueError when it names none)."""
    note, input_id = entry.get("note", ""), entry.get("input", "")
    if note.startswith("start"):
        return start
    if m := _REPLY.match(note):
        kind, comp, step, attempt = m.group(1), bool(m.group(2)), m.group(3), int(m.group(4))
        cid = command_id(start.saga_id, step, comp, attempt)
        if stray := _STRAY_ID.search(note):  # it named another command: keep that
            cid = str(ast.literal_eval(stray.group(1)))
        return Reply(kind, step, attempt, comp, {}, bool(m.group(5)), "", cid)  # type: ignore[arg-type]
    if m := _TIMER.match(note):
        return TimerDue(m.group(1), m.group(3), int(m.group(4)), bool(m.group(2)))  # type: ignore[arg-type]
    if m := _OPERATOR.match(note):
        return Operator(m.group(1), m.group(2), "", (m.group(3) or "").strip())  # type: ignore[arg-type]
    if m := _SIGNAL.match(note):
        return Signal(m.group(1), input_id, {}, m.group(2) or "")
    raise ValueError(f"note {note[:80]!r} names no input this version replays")


def final_steps(fields: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """Step name -> status in a saga hash: the steps `names` lists (a step not begun has no
    field: pending), then any other step the hash has."""
    f = join_long(dict(fields))
    out = {n: read_step(f, n).status.value for n in names}
    for n in step_names(f):
        out.setdefault(n, read_step(f, n).status.value)
    return out


def from_redis(
    saga_id: str,
    fields: Mapping[str, str],
    entries: Sequence[Mapping[str, str]],
    step_list: Sequence[str],
    where: str,
) -> History:
    """A saga's recorded history from its hash and history entries. `step_list` names the steps
    of the saga's own definition (those not begun are pending in the hash). RefusedError when
    the history lost its start (capped) or an entry cannot be read back."""
    f = join_long(dict(fields))
    if "type" not in f:
        raise RefusedError(f"saga {saga_id} has no type in its hash: not a saga written by decide")
    try:
        data = orjson.loads(f.get("data") or "{}")
        version = int(f.get("definition_version", "1"))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise RefusedError(f"saga {saga_id}: its hash does not parse ({exc})") from None
    start = Start(saga_id, f["type"], data, f.get("correlation_id", ""), f.get("traceparent", ""))
    first = entries[0] if entries else {}
    if not (first.get("note", "").startswith("start") and first.get("outcome") == "applied"):
        if len(entries) >= HISTORY_CAP:
            raise RefusedError(
                f"saga {saga_id}: its history is truncated: it keeps the last {HISTORY_CAP} "
                "entries and the start was dropped, so replay would begin mid-way; refused "
                f"(export it while it is young, or replay a golden file)"
            )
        raise RefusedError(f"saga {saga_id}: its history does not begin with its start")
    inputs: list[Recorded] = []
    notes: list[tuple[str, str]] = []
    for n, e in enumerate(entries):
        try:
            event = entry_event(e, start)
            now = from_iso(e.get("at", ""))
        except ValueError as exc:
            raise RefusedError(f"saga {saga_id}: history entry {n}: {exc}") from None
        outcome, status = e.get("outcome", ""), e.get("state", "")
        if outcome not in _OUTCOMES or status not in _STATUSES:
            raise RefusedError(
                f"saga {saga_id}: history entry {n}: outcome {outcome!r:.20} / state "
                f"{status!r:.20} is not one decide writes"
            )
        inputs.append(Recorded(event, now, Outcome(outcome, status, None)))
        notes.append((e.get("at", ""), e.get("note", "")))
    last = inputs[-1]
    steps = final_steps(f, step_list)
    inputs[-1] = replace(last, expected=replace(last.expected, steps=steps))
    return History(saga_id, f["type"], version, inputs, where, notes)


def with_steps(h: History, own: SagaDefinition) -> History:
    """The history with every input's step statuses filled in by deciding it again under the
    saga's own definition, once that agrees with everything recorded (outcomes, statuses, the
    final steps): what `--export` writes, so a golden file checks each input's steps and
    commands."""
    diverged = replay(own, h.inputs)
    if diverged is not None:
        raise RefusedError(
            f"saga {h.saga_id}: its history does not replay under its own definition "
            f"({own.name} v{own.version}), so it cannot be exported: {diverged.describe()}"
        )
    got = [o for _, o in decisions(own, ((r.event, r.now_ms) for r in h.inputs))]
    inputs = [replace(r, expected=o) for r, o in zip(h.inputs, got, strict=True)]
    return replace(h, inputs=inputs)


def step_list_for(own: SagaDefinition | None, fallback: SagaDefinition) -> list[str]:
    """The step names whose absence from the hash means `pending`: the saga's own definition's
    when this process has it registered, else the replayed definition's."""
    return [s.name for s in (own or fallback).steps]
