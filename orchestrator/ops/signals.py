"""Signals sent by a person: check the name and the data, check that the saga waits for the
signal, then build the `Signal` message (`saga signal`, `POST /api/sagas/{id}/signals/{name}`,
the dashboard).

The signal travels on the events topic keyed by the saga id, so the daemon stays the only
writer of saga state. The check runs the core's own `decide()` on the saga as Redis holds it
now, so a refusal here carries the very reason the daemon would record ("step approval waits
for 'approve' or 'reject', not 'aprove'"); the daemon decides again when the signal arrives,
and a signal sent anyway (`--force`) is recorded there as refused.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from orchestrator.core.decide import decide
from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import FORWARD, Signal, StepStatus
from orchestrator.engine.statecodec import decode_fields, from_fields, saga_type_of
from orchestrator.ops import InputError, RefusedError
from orchestrator.ops.query import SagaQuery, SagaStatus, now_ms
from schemas.messages import MAX_SIGNAL_DATA_BYTES, SIGNAL_NAME_PATTERN, new_id
from schemas.messages import Signal as SignalMessage

_NAME = re.compile(SIGNAL_NAME_PATTERN)
MAX_REASON = 4096
#: what a person may type as `--data` before it is parsed at all (the parsed data is then held
#: to MAX_SIGNAL_DATA_BYTES as JSON; whitespace may make the text longer than that)
MAX_DATA_TEXT = 4 * MAX_SIGNAL_DATA_BYTES


class TooLargeError(InputError):
    """The signal's data is larger than a signal may carry: exit 2, HTTP 413."""

    http_status = 413


@dataclass
class Target:
    """A saga a signal is meant for, as Redis holds it now."""

    status: SagaStatus
    #: its definition, None when its type is not registered in this process
    definition: SagaDefinition | None


def name(text: str) -> str:
    """A signal name as the wire and the definitions accept it."""
    if not isinstance(text, str) or not _NAME.match(text):
        shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:57] + "..."
        raise InputError(
            f"invalid signal name {shown}: 1 to 64 letters, digits, '_', '.' or '-' (e.g. approve)"
        )
    return text


def data(value: Any, reason: str = "") -> dict[str, Any]:
    """The signal's data: a JSON object of bounded size. A reason is kept in it as `reason`
    (the data becomes the wait step's result, so the reason shows in the saga's status)."""
    if not isinstance(value, dict):
        raise InputError(f"the signal's data must be a JSON object, not {_kind(value)}")
    doc: dict[str, Any] = value
    if not isinstance(reason, str):
        raise InputError("reason must be text")
    if len(reason) > MAX_REASON:
        raise InputError(f"reason is longer than {MAX_REASON} characters")
    reason = reason.strip()
    if reason:
        if doc.get("reason", reason) != reason:
            raise InputError("give the reason once: --reason (or the body's reason) or data.reason")
        doc = {**doc, "reason": reason}
    long_keys = [k for k in doc if len(str(k)) > 64]
    if long_keys:
        raise InputError(f"data key {long_keys[0][:40]!r}... is longer than 64 characters")
    size = len(orjson.dumps(doc, default=str))
    if size > MAX_SIGNAL_DATA_BYTES:
        raise TooLargeError(
            f"the signal's data is {size} bytes of JSON; a signal carries at most "
            f"{MAX_SIGNAL_DATA_BYTES}"
        )
    return doc


def data_text(text: str | None, reason: str = "", where: str = "--data") -> dict[str, Any]:
    """`--data` as typed (or the dashboard's data field): JSON text of an object."""
    if text is None:
        return data({}, reason)
    if len(text) > MAX_DATA_TEXT:
        raise TooLargeError(
            f"{where} is {len(text)} characters; a signal's data is at most "
            f"{MAX_SIGNAL_DATA_BYTES} bytes of JSON"
        )
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON: {str(exc)[:120]}") from None
    return data(doc, reason)


async def target(query: SagaQuery, saga_id: str) -> Target:
    """The saga and its definition; `NotFoundError` for an unknown saga."""
    status = await query.status(saga_id)
    definition = None
    if query.registry is not None and status.saga_type:
        raw = await query.redis.hget(query.keys.saga(saga_id), "definition_version")
        try:
            version = int(raw or 1)  # bytes or text, as the client decodes
        except ValueError:  # a hash written by hand: no definition, the hash alone is checked
            version = 0
        definition = query.registry.version(status.saga_type, version)
    return Target(status, definition)


async def refusal(query: SagaQuery, t: Target, signal_name: str, now: int = 0) -> str:
    """Why the saga would refuse the signal now ('' when it would take it), in the words the
    daemon records. Without the saga's definition, only what the hash says is checked: the
    saga goes forward and one of its steps is waiting."""
    s = t.status
    if s.mode == "choreography":  # followed by the tracker: nobody would take the signal
        return "it is a tracked choreography; the tracker only records its services' events"
    if t.definition is None:
        if s.state not in {x.value for x in FORWARD}:
            return f"saga is {s.state}"
        if not any(st.status == StepStatus.WAITING.value for st in s.steps):
            return "no step is waiting for a signal"
        return ""
    raw = decode_fields(await query.redis.hgetall(query.keys.saga(s.saga_id)))
    if not raw or saga_type_of(raw) is None:
        return "the saga is gone"
    try:
        state = from_fields(raw, t.definition)
    except (KeyError, ValueError) as exc:  # a hash written by something else than the engine
        return f"its stored state cannot be read ({type(exc).__name__}: {str(exc)[:80]})"
    registry = {t.definition.name: t.definition}
    decision = decide(state, Signal(signal_name, ""), now or now_ms(), registry, t.definition)
    if decision.outcome == "applied":
        return ""
    note = decision.note
    marker = ": refused ("
    if marker in note and note.endswith(")"):  # "signal x: refused (<reason>)" -> the reason
        return note[note.index(marker) + len(marker) : -1]
    return note


def waits_for(t: Target) -> dict[str, list[str]]:
    """The waiting steps and the signals each takes (the signal first, then the rejects)."""
    out: dict[str, list[str]] = {}
    steps = {st.name: st for st in t.status.steps}
    for sd in t.definition.steps if t.definition else ():
        st = steps.get(sd.name)
        if sd.is_wait and st is not None and st.status == StepStatus.WAITING.value:
            out[sd.name] = [sd.signal, *sd.reject_signals]
    return out


def refused(t: Target, signal_name: str, why: str) -> RefusedError:
    """The error for a signal the saga would refuse, with the reason."""
    return RefusedError(f"saga {t.status.saga_id} is not waiting for signal {signal_name!r}: {why}")


def message(
    status: SagaStatus, signal_name: str, signal_data: dict[str, Any], sender: str | None
) -> SignalMessage:
    """The signal for a saga, with a fresh message id (its dedupe id)."""
    try:
        return SignalMessage(
            message_id=new_id(),
            saga_id=status.saga_id,
            saga_type=status.saga_type,
            correlation_id=status.correlation_id or None,
            traceparent=status.traceparent or None,
            name=name(signal_name),
            data=signal_data,
            sender=(sender if sender is not None else _whoami())[:256],
        )
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        if where.startswith("data"):
            raise InputError(f"the signal's data: {exc.errors()[0]['msg']}") from None
        raise RefusedError(
            f"saga {status.saga_id}: its stored {where} cannot go into a signal; fix the saga "
            "by hand"
        ) from None


def _kind(doc: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(doc), "a number"
    )


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
