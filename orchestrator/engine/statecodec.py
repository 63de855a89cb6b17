"""SagaState <-> the flat, human-readable fields of the saga's Redis hash.

`redis-cli HGETALL saga:<id>` shows, in plain text: type, state, current_step, version,
created_at, updated_at, the order data as JSON, and one field per step that has begun:

    step.reserve_inventory   completed a=1 {"reservationId":"res-7"}
    step.process_payment     compensation_failed a=1 c=2 floors=0/1 {"chargeId":"ch-7"}
    step.process_payment.error   card declined

(status, then `a=` attempts, `c=` compensation attempts, `may_have_run`, `floors=` retry floors
after a person's retry, `@` the milliseconds after `created_at` its action completed (kept once
written: `stamp_times`), then the step's result). Fields at their default are left out: no
`last_error` while there is none, no `state_entered_at` while it equals `updated_at`, no
`correlation_id` while it is the saga id, no `definition_version` while it is 1, no field for a
step that has not begun.

Why so lean: Redis keeps a hash compact (a listpack, a few bytes per field) only while it has at
most `hash-max-listpack-entries` (512) fields and every field and value is at most
`hash-max-listpack-value` (64) bytes; past either it becomes a hash table at about 5x the
memory. So a value longer than 64 bytes (the order data, a long result or error) is split into
`<field>`, `<field>~2`, `<field>~3`, ... of at most 64 bytes each, read back joined (up to 16
pieces: a longer value stays whole, and that saga's hash is a hash table).

The layout before this one (one field per step attribute, `step.<name>.status`, `saga_id`,
`current_step_index`, every field always present, `data` in one piece) is still read: a saga
written by an older version loads the same, and its next step rewrites it in this layout
(`Write.dropped` removes the old fields).

A completed saga is compacted after a grace period (`orchestrator/engine/compact.py`) to a
summary: type, state, version, the times (and correlation id, definition version, entered time
when not at their default), and one field `steps` with each step's final status in definition
order, `@` the milliseconds after `created_at` its last transition came (from the history,
which goes):

    steps    completed@432 completed@993 completed@1489 completed@2764

It decodes to the same saga minus what was dropped: the data, the step results, attempts and
errors, the traceparent and the start's id (`summary_fields`).
"""

from __future__ import annotations

import contextlib
import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import SagaState, Status, StepState, StepStatus

#: Redis's default `hash-max-listpack-value`: longer values are split (see above)
CHUNK_BYTES = 64
#: a value longer than this many pieces stays whole: the hash would not stay compact anyway, and
#: a large order must not become thousands of fields
MAX_PIECES = 16
_CHUNK = re.compile(r"^(.*)~([0-9]+)$")
#: the one field of a compacted saga's steps (see above)
SUMMARY = "steps"
#: a history note that names a step: `completed reserve_inventory#1: ...`,
#: `timeout compensation timer process_payment#2 ...` (`describe_event`)
_STEP_NOTE = re.compile(r"^[a-z_]+(?: compensation)?(?: timer)? (\S+)#[0-9]+")
_OLD_STEP_FIELDS = ("status", "attempts", "compensation_attempts", "result", "may_have_run")


@functools.lru_cache(maxsize=4096)
def iso(ms: int) -> str:
    # cached: a step formats its created and updated times, then the same updated time for
    # its history entry, and datetime formatting is a visible share of a step's CPU
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=4096)
def from_iso(text: str) -> int:
    # integer arithmetic: float timestamps read some instants back 1 ms early; cached: every
    # step reads its saga's `created_at` (the history it implies is derived from it)
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)


def step_text(s: StepState) -> str:
    """One step as one readable value: `completed a=1 {"reservationId":"res-7"}`."""
    parts = [s.status.value]
    if s.attempts:
        parts.append(f"a={s.attempts}")
    if s.compensation_attempts:
        parts.append(f"c={s.compensation_attempts}")
    if s.may_have_run:
        parts.append("may_have_run")
    if s.attempt_floor or s.compensation_floor:
        parts.append(f"floors={s.attempt_floor}/{s.compensation_floor}")
    if s.result is not None:
        parts.append(orjson.dumps(s.result).decode())
    return " ".join(parts)


def time_of(text: str) -> int | None:
    """The `@<ms>` of a step value (when its action completed, ms after `created_at`)."""
    head = text.partition(" {")[0]
    at = head.find(" @")  # a token after the first (the status) that starts with "@"
    while at != -1:
        end = head.find(" ", at + 2)
        token = head[at + 2 : end] if end != -1 else head[at + 2 :]
        if token.isdigit():
            return int(token)
        at = head.find(" @", at + 1)
    return None


def with_time(text: str, ms: int) -> str:
    """A step value with `@<ms>` before its result: `completed a=1 @259 {"chargeId":"ch-7"}`."""
    head, brace, rest = text.partition(" {")
    return f"{head} @{ms}" + (" {" + rest if brace else "")


def whole(fields: dict[str, str], name: str) -> str | None:
    """One field's value, its pieces joined (`split_long`): cheaper than `join_long` on the
    whole hash when only a few fields are read."""
    value = fields.get(name)
    if value is None or f"{name}~2" not in fields:
        return value
    for n in range(2, MAX_PIECES + 1):
        piece = fields.get(f"{name}~{n}")
        if piece is None:
            break
        value += piece
    return value


def stamp_times(
    before: dict[str, str], after: dict[str, str], names: list[str], at_ms: int, created_ms: int
) -> dict[str, str]:
    """`after` (a step's new hash, split) with each step's completion time: kept from `before`
    once written, or `at_ms` for a step this write completes. The history derives a plain
    forward saga's entries from these (`history.derive`), so it needs no list of its own.
    Returns `after` itself when nothing is to stamp (it runs on every step: field by field)."""
    out = after
    for name in names:
        field = f"step.{name}"
        value = whole(after, field)
        if value is None or time_of(value) is not None:
            continue
        old = whole(before, field)
        ms = time_of(old) if old else None
        if ms is not None and old == with_time(value, ms):
            # unchanged since it was stamped (most steps of most writes): its stamped pieces
            # as they stand, without cutting them again
            if out is after:
                out = dict(after)
            _take_pieces(out, before, field)
            continue
        done = StepStatus.COMPLETED.value
        if ms is None and value.split(" ", 1)[0] == done:
            # the status before, in either layout: a step completed by an older write (or by
            # an older version) has no known time, and gets none
            was = old if old is not None else before.get(f"{field}.status", "")
            if was.split(" ", 1)[0] != done:
                ms = max(0, at_ms - created_ms)
        if ms is None:
            continue
        if out is after:
            out = dict(after)
        _drop_pieces(out, field)  # its pieces are cut again, the time added
        out |= split_long({field: with_time(value, ms)})
    return out


def _drop_pieces(fields: dict[str, str], name: str) -> None:
    n = 2
    while fields.pop(f"{name}~{n}", None) is not None:  # pieces are numbered without gaps
        n += 1


def _take_pieces(out: dict[str, str], source: dict[str, str], name: str) -> None:
    """`name` and its pieces in `out` as they are in `source`."""
    _drop_pieces(out, name)
    out[name] = source[name]
    n = 2
    while (piece := source.get(f"{name}~{n}")) is not None:
        out[f"{name}~{n}"] = piece
        n += 1


def parse_step(text: str, error: str = "") -> StepState:
    """Inverse of `step_text` (the result, a JSON object, is whatever follows the first ` {`)."""
    head, brace, rest = text.partition(" {")
    tokens = head.split()
    found = dict(t.split("=", 1) for t in tokens[1:] if "=" in t)
    floors = found.get("floors", "0/0").split("/")
    return StepState(
        status=StepStatus(tokens[0]),
        attempts=int(found.get("a", "0")),
        compensation_attempts=int(found.get("c", "0")),
        result=orjson.loads("{" + rest) if brace else None,
        error=error,
        may_have_run="may_have_run" in tokens[1:],
        attempt_floor=int(floors[0]),
        compensation_floor=int(floors[1]),
    )


def to_fields(state: SagaState, definition: SagaDefinition) -> dict[str, str]:
    """The hash of a saga: only what is not at its default, long values split (see above)."""
    fields = {
        "type": state.saga_type,
        "state": state.status.value,
        "current_step": definition.steps[state.current_step].name if state.steps else "",
        "version": str(state.version),
        "created_at": iso(state.created_ms),
        "updated_at": iso(state.updated_ms),
    }
    if state.definition_version != 1:
        fields["definition_version"] = str(state.definition_version)
    if state.entered_ms != state.updated_ms:
        fields["state_entered_at"] = iso(state.entered_ms)
    if state.correlation_id != state.saga_id:
        fields["correlation_id"] = state.correlation_id
    if state.traceparent:
        fields["traceparent"] = state.traceparent
    if state.last_error:
        fields["last_error"] = state.last_error
    if state.data:
        fields["data"] = orjson.dumps(state.data).decode()
    for sd, s in zip(definition.steps, state.steps, strict=True):
        if s != StepState():
            fields[f"step.{sd.name}"] = step_text(s)
        if s.error:
            fields[f"step.{sd.name}.error"] = s.error
    return split_long(fields)


def split_long(fields: dict[str, str]) -> dict[str, str]:
    """Values over `CHUNK_BYTES` (up to `MAX_PIECES` of them) as `<field>`, `<field>~2`, ...
    (cut between characters)."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        raw = value.encode()
        if len(raw) <= CHUNK_BYTES or len(raw) > CHUNK_BYTES * MAX_PIECES:
            out[name] = value
            continue
        part, start = 1, 0
        while start < len(raw):
            end = min(start + CHUNK_BYTES, len(raw))
            while end < len(raw) and raw[end] & 0xC0 == 0x80:  # inside a UTF-8 character
                end -= 1
            out[name if part == 1 else f"{name}~{part}"] = raw[start:end].decode()
            part, start = part + 1, end
    return out


def join_long(fields: dict[str, str]) -> dict[str, str]:
    """Inverse of `split_long`: each `<field>~n` appended to `<field>`, in order."""
    parts = [(m.group(1), int(m.group(2)), v) for k, v in fields.items() if (m := _CHUNK.match(k))]
    if not parts:
        return fields
    out = {k: v for k, v in fields.items() if not _CHUNK.match(k)}
    for name, _, value in sorted(parts, key=lambda p: (p[0], p[1])):
        if name in out:
            out[name] += value
    return out


def decode_fields(raw: dict[Any, Any]) -> dict[str, str]:
    """Hash fields as text; a no-op for a client that already decodes responses."""
    if not raw or isinstance(next(iter(raw)), str):
        return raw
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def saga_type_of(raw: dict[Any, Any]) -> tuple[str, int] | None:
    f = decode_fields(raw)
    if "type" not in f:
        return None
    return f["type"], int(f.get("definition_version", "1"))


def read_step(f: dict[str, str], name: str) -> StepState:
    """One step from joined fields, in either layout."""
    p = f"step.{name}"
    if p in f:
        return parse_step(f[p], f.get(p + ".error", ""))
    if p + ".status" not in f:  # not begun
        return StepState()
    result = f.get(p + ".result", "")
    floors = f.get(p + ".retry_floors", "0/0").split("/")
    return StepState(
        status=StepStatus(f[p + ".status"]),
        attempts=int(f.get(p + ".attempts", "0")),
        compensation_attempts=int(f.get(p + ".compensation_attempts", "0")),
        result=orjson.loads(result) if result else None,
        error=f.get(p + ".error", ""),
        may_have_run=f.get(p + ".may_have_run") == "yes",
        attempt_floor=int(floors[0]),
        compensation_floor=int(floors[1]),
    )


def step_names(f: dict[str, str]) -> list[str]:
    """The steps a hash names, in either layout (for a type this process does not know)."""
    names = []
    for k in f:
        if k.startswith("step.") and not _CHUNK.match(k):
            name = k[len("step.") :]
            if name.endswith(".status"):
                names.append(name[: -len(".status")])
            elif not any(
                name.endswith(f".{x}") for x in (*_OLD_STEP_FIELDS, "error", "retry_floors")
            ):
                names.append(name)
    return names


def from_fields(raw: dict[Any, Any], definition: SagaDefinition, saga_id: str = "") -> SagaState:
    """The saga from its hash, in either layout; `saga_id` is the key's (this layout does not
    repeat it in a field)."""
    f = join_long(decode_fields(raw))
    sid = f.get("saga_id") or saga_id
    current = definition.index(f.get("current_step", "")) or 0
    if SUMMARY in f:  # compacted: a completed saga ended on its last step
        steps = summary_steps(f[SUMMARY], len(definition.steps))
        current = len(definition.steps) - 1
    else:
        steps = tuple(read_step(f, sd.name) for sd in definition.steps)
    updated = f["updated_at"]
    return SagaState(
        saga_id=sid,
        saga_type=f["type"],
        definition_version=int(f.get("definition_version", "1")),
        status=Status(f["state"]),
        current_step=int(f.get("current_step_index", current)),
        steps=steps,
        data=orjson.loads(f.get("data") or "{}"),
        version=int(f["version"]),
        created_ms=from_iso(f["created_at"]),
        updated_ms=from_iso(updated),
        entered_ms=from_iso(f.get("state_entered_at") or updated),
        correlation_id=f.get("correlation_id") or sid,
        traceparent=f.get("traceparent", ""),
        last_error=f.get("last_error", ""),
    )


def logical_fields(
    raw: dict[Any, Any], definition: SagaDefinition | None = None, saga_id: str = ""
) -> dict[str, str]:
    """The hash, in either layout, as one field per attribute with the defaults filled in
    (`step.<name>.status`, `.attempts`, `.compensation_attempts`, `.result`, `.error`,
    `.may_have_run`, `.retry_floors`, `last_error`, ...): what `saga status` and the HTTP API
    show. Steps come from `definition` when given, else from the fields the hash has; a step
    whose fields do not parse (a hash edited by hand) is shown as its fields stand."""
    f = join_long(decode_fields(raw))
    if not f:
        return {}
    out = {k: v for k, v in f.items() if not k.startswith("step.") and k != "current_step_index"}
    out.setdefault("saga_id", saga_id)
    out.setdefault("definition_version", "1")
    out.setdefault("state_entered_at", f.get("updated_at", ""))
    out.setdefault("correlation_id", out["saga_id"])
    for name in ("last_error", "traceparent", "data"):
        out.setdefault(name, "")
    names = [s.name for s in definition.steps] if definition else []
    compacted: dict[str, StepState] = {}
    if SUMMARY in f and definition:  # unknown type: `steps` is shown as it stands
        with contextlib.suppress(ValueError):  # written by hand: shown as it stands
            compacted = dict(zip(names, summary_steps(f[SUMMARY], len(names)), strict=True))
            out.setdefault("current_step", names[-1])
    for name in names + [n for n in step_names(f) if n not in names]:
        p = f"step.{name}."
        try:
            s = compacted[name] if name in compacted else read_step(f, name)
        except (ValueError, KeyError, IndexError):  # written by hand: shown as it stands
            out |= {k: v for k, v in f.items() if k == p[:-1] or k.startswith(p)}
            continue
        out |= {
            p + "status": s.status.value,
            p + "attempts": str(s.attempts),
            p + "compensation_attempts": str(s.compensation_attempts),
            p + "result": orjson.dumps(s.result).decode() if s.result is not None else "",
            p + "error": s.error,
            p + "may_have_run": "yes" if s.may_have_run else "no",
            p + "retry_floors": f"{s.attempt_floor}/{s.compensation_floor}",
        }
    return out


def summary_steps(text: str, count: int) -> tuple[StepState, ...]:
    """The steps of a compacted saga's `steps` field (statuses only; ValueError when it does
    not name `count` known statuses)."""
    tokens = text.split()
    if len(tokens) != count:
        raise ValueError(f"{SUMMARY!r} names {len(tokens)} steps, not {count}")
    return tuple(StepState(status=StepStatus(t.partition("@")[0])) for t in tokens)


def summary_fields(raw: dict[Any, Any], history: list[dict[str, str]]) -> dict[str, str] | None:
    """The summary a completed saga is compacted to (see above), from its hash and its history
    entries (`history.decode`); None for a hash that is not a completed saga of this layout or
    does not parse (written by hand, or by an older version: left as it is)."""
    f = join_long(decode_fields(raw))
    if f.get("state") != Status.COMPLETED.value or SUMMARY in f or "saga_id" in f or "mode" in f:
        return None  # not completed, compacted already, an older layout, or one the tracker owns
    names = step_names(f)
    try:
        created = from_iso(f["created_at"])
        from_iso(f["updated_at"])
        int(f["version"])
        statuses = [parse_step(f[f"step.{n}"]).status.value for n in names]
    except (KeyError, ValueError, IndexError):
        return None
    if not f.get("type") or not names:
        return None
    # Steps are written in definition order as they begin (`to_fields`; a completed saga has
    # begun, or skipped, every step), so a listpack hash's order is the definition's (the
    # script compacts no other encoding).
    done: dict[str, int] = {}
    for e in history:
        m = _STEP_NOTE.match(e.get("note", ""))
        if e.get("outcome") == "applied" and m and m.group(1) in names:
            with contextlib.suppress(ValueError):
                done[m.group(1)] = from_iso(e.get("at", ""))
    tokens = [
        f"{st}@{done[n] - created}" if n in done else st
        for n, st in zip(names, statuses, strict=True)
    ]
    out = {k: f[k] for k in ("type", "state", "version", "created_at", "updated_at")}
    for k in ("definition_version", "state_entered_at", "correlation_id"):
        if k in f:
            out[k] = f[k]
    return split_long(out | {SUMMARY: " ".join(tokens)})
