"""Parsing of what people type: durations, saga ids, dead-letter positions, JSON files."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core.model import Status
from orchestrator.ops import InputError
from schemas.messages import SAGA_ID_PATTERN

_DURATION = re.compile(r"^(\d{1,9})(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_POSITION = re.compile(r"^(\d{1,6}):(\d{1,19})$")
_SAGA_ID = re.compile(SAGA_ID_PATTERN)
MAX_FILE_BYTES = 1_000_000
STATES = tuple(s.value for s in Status)


def duration_ms(text: str) -> int:
    """'90s', '10m', '2h', '1d', '500ms' -> milliseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise InputError(
            f"invalid duration {text[:40]!r}: use a number and a unit, e.g. 30s, 10m, 2h"
        )
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def since_ms(text: str, now_ms: int) -> int:
    """A point in time: a duration back from now ('1h') or an ISO-8601 timestamp."""
    if _DURATION.match(text.strip()):
        return now_ms - duration_ms(text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"invalid time {text[:40]!r}: use a duration (1h) or an ISO time (2024-05-01T10:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def saga_id(text: str) -> str:
    """A saga id as the orchestrator accepts it (it becomes part of Redis keys)."""
    if not _SAGA_ID.match(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InputError(
            f"invalid saga id {shown!r}: 1-128 characters of letters, digits, '.', '_' or '-'"
        )
    return text


def state(text: str) -> str:
    if text not in STATES:
        raise InputError(f"invalid state {text[:40]!r}: one of {', '.join(STATES)}")
    return text


def position(text: str) -> tuple[int, int]:
    """'<partition>:<offset>' of a dead-letter record."""
    m = _POSITION.match(text.strip())
    if not m:
        raise InputError(f"invalid position {text[:40]!r}: use <partition>:<offset>, e.g. 0:42")
    return int(m.group(1)), int(m.group(2))


def read_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    p = Path(path)
    try:
        if p.stat().st_size > max_bytes:
            raise InputError(f"{path}: larger than {max_bytes} bytes")
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def json_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object")
    return doc


def json_file(path: str) -> dict[str, Any]:
    return json_object(read_file(path), path)
