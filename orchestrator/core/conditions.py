"""Conditions on saga data: when a step runs.

A condition is data, not code: no callables and no clock, so a decision replays the same way
from a recorded history, `saga status` can show it (`describe()`), and a definition states it
plainly. It is checked when it is built (a malformed one is a `ValueError` with one line) and
it is total when evaluated: hostile or odd saga data (a missing path, a string where a number
was expected, a list where an object was expected) makes it false, never raises.

    Compare("amount", "gt", 1000)
    AllOf([Compare("amount", "gt", 1000), Not(Compare("customer.tier", "eq", "gold"))])

Rules:
- `path` is a dotted path into the saga data (`"amount"`, `"customer.tier"`); each part names
  a key of an object. A missing path makes every op false, `exists` included; only `Not(...)`
  turns that around.
- Numbers compare as numbers only, with no coercion: the string "1000" is not > 999, and a
  boolean is not a number. `eq`/`ne`/`in` compare a value with the same kind of value (1 and
  1.0 are equal; "1" and 1 are not).
- `in` takes a non-empty list or tuple of values; `exists` takes no value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["gt", "ge", "lt", "le", "eq", "ne", "in", "exists"]
_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
OPS = (*_SYMBOLS, "in", "exists")
_ORDERING = ("gt", "ge", "lt", "le")
#: dotted keys of JSON objects; keys with other characters are not reachable (on purpose: the
#: path is shown in status and docs, so it stays plain)
_PATH = re.compile(r"^[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*$")
MAX_PATH_CHARS = 200
MAX_IN_VALUES = 100
#: nesting limit, so evaluating and describing never come near the recursion limit
MAX_DEPTH = 16
_MISSING = object()


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: object) -> bool:
    """A JSON scalar a condition may compare with (finite numbers only)."""
    if _number(value):
        return math.isfinite(value)  # type: ignore[arg-type]
    return value is None or isinstance(value, str | bool)


def _same(a: object, b: object) -> bool:
    """Equality without coercion: numbers with numbers, text with text, booleans with
    booleans (Python alone says True == 1)."""
    if _number(a) and _number(b):
        return a == b
    return type(a) is type(b) and a == b


def _shown(value: object) -> str:
    """A value as the definition's reader wrote it (JSON-like), cut to stay one short line."""
    if isinstance(value, tuple):
        text = "[" + ", ".join(_shown(v) for v in value) + "]"
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def lookup(data: object, path: str) -> object:
    """The value at a dotted path, or `_MISSING` when a part is absent or not an object."""
    here = data
    for part in path.split("."):
        if not isinstance(here, Mapping) or part not in here:
            return _MISSING
        here = here[part]
    return here


@dataclass(frozen=True)
class Compare:
    """`path op value`: true when the saga data at `path` compares as asked."""

    path: str
    op: Op
    value: Any = None

    def __post_init__(self) -> None:
        where = f"condition {self.path!r} {self.op!r} {_shown(self.value)}"
        if not isinstance(self.path, str) or not _PATH.match(self.path):
            raise ValueError(
                f"{where}: the path must be dotted keys of letters, digits, '_' or '-' "
                f"(like 'amount' or 'customer.tier')"
            )
        if len(self.path) > MAX_PATH_CHARS:
            raise ValueError(f"{where}: the path is longer than {MAX_PATH_CHARS} characters")
        if self.op not in OPS:
            raise ValueError(f"{where}: op must be one of {', '.join(OPS)}")
        if self.op in _ORDERING and not (_number(self.value) and _scalar(self.value)):
            raise ValueError(
                f"{where}: {self.op} compares numbers, so the value must be a finite number"
            )
        if self.op in ("eq", "ne") and not _scalar(self.value):
            raise ValueError(
                f"{where}: the value must be a string, a finite number, a boolean or None"
            )
        if self.op == "exists" and self.value is not None:
            raise ValueError(f"{where}: exists takes no value")
        if self.op == "in":
            values = self.value
            if not isinstance(values, list | tuple) or not values:
                raise ValueError(f"{where}: in takes a non-empty list of values")
            if len(values) > MAX_IN_VALUES or not all(_scalar(v) for v in values):
                raise ValueError(
                    f"{where}: in takes up to {MAX_IN_VALUES} strings, finite numbers, "
                    "booleans or None"
                )
            # a tuple keeps the condition (and so the definition) hashable and immutable
            object.__setattr__(self, "value", tuple(values))

    def evaluate(self, data: object) -> bool:
        got = lookup(data, self.path)
        if got is _MISSING:
            return False
        if self.op == "exists":
            return True
        if self.op == "eq":
            return _same(got, self.value)
        if self.op == "ne":
            return not _same(got, self.value)
        if self.op == "in":
            return any(_same(got, v) for v in self.value)
        if not _number(got):
            return False
        value: float = self.value
        number: float = got  # type: ignore[assignment]
        if self.op == "gt":
            return number > value
        if self.op == "ge":
            return number >= value
        if self.op == "lt":
            return number < value
        return number <= value

    def describe(self) -> str:
        if self.op == "exists":
            return f"{self.path} exists"
        return f"{self.path} {_SYMBOLS.get(self.op, self.op)} {_shown(self.value)}"


def _children(kind: str, conditions: object) -> tuple[Condition, ...]:
    if isinstance(conditions, Compare | AllOf | AnyOf | Not):
        raise ValueError(f"{kind} takes a list of conditions, not one condition")
    if not isinstance(conditions, list | tuple) or not conditions:
        raise ValueError(f"{kind} takes a non-empty list of conditions (got {_shown(conditions)})")
    for c in conditions:
        _check_condition(kind, c)
    return tuple(conditions)


def _check_condition(kind: str, c: object) -> None:
    if not isinstance(c, Compare | AllOf | AnyOf | Not):
        raise ValueError(
            f"{kind}: {_shown(c)} is not a condition (use Compare, AllOf, AnyOf or Not)"
        )
    if depth(c) >= MAX_DEPTH:
        raise ValueError(f"{kind}: conditions nest deeper than {MAX_DEPTH} levels")


def _part(c: Condition) -> str:
    return c.describe() if isinstance(c, Compare) else f"({c.describe()})"


@dataclass(frozen=True)
class AllOf:
    """True when every condition is true."""

    conditions: tuple[Condition, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", _children("AllOf", self.conditions))

    def evaluate(self, data: object) -> bool:
        return all(c.evaluate(data) for c in self.conditions)

    def describe(self) -> str:
        return " and ".join(_part(c) for c in self.conditions)


@dataclass(frozen=True)
class AnyOf:
    """True when at least one condition is true."""

    conditions: tuple[Condition, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", _children("AnyOf", self.conditions))

    def evaluate(self, data: object) -> bool:
        return any(c.evaluate(data) for c in self.conditions)

    def describe(self) -> str:
        return " or ".join(_part(c) for c in self.conditions)


@dataclass(frozen=True)
class Not:
    """True when the condition is false (a missing path included)."""

    condition: Condition

    def __post_init__(self) -> None:
        _check_condition("Not", self.condition)

    def evaluate(self, data: object) -> bool:
        return not self.condition.evaluate(data)

    def describe(self) -> str:
        return f"not ({self.condition.describe()})"


Condition = Compare | AllOf | AnyOf | Not
CONDITION_TYPES = (Compare, AllOf, AnyOf, Not)


def why_false(c: Condition) -> str:
    """Why a step was skipped, readably: `not amount > 1000`, `not (a exists and b exists)`."""
    return f"not {_part(c)}"


def depth(c: Condition) -> int:
    """How deep a condition nests (a Compare is 1); built conditions are checked already, so
    this stays within MAX_DEPTH levels of recursion."""
    if isinstance(c, AllOf | AnyOf):
        return 1 + max(depth(x) for x in c.conditions)
    if isinstance(c, Not):
        return 1 + depth(c.condition)
    return 1
