"""What the trip workers share: the participant with its middleware, reading the trip out of a
command, and the option objects (`flight`, `hotel`, `car`) a trip may carry."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from participants.errors import NonRetryableError
from participants.participant import Participant
from participants.samples.faults.inject import FaultInjection

CENT = Decimal("0.01")
MAX_AMOUNT = 10**12
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def participant(name: str) -> Participant:
    """A trip worker: it takes injected faults like the order sample's workers
    (`saga participant fail-next flight`...)."""
    return Participant(name, middleware=[FaultInjection()])


@dataclass(frozen=True)
class Trip:
    """The two fields every trip has."""

    customer_id: str
    amount: Decimal


def read_trip(data: dict[str, Any]) -> Trip:
    """`customerId` and `amount` of a trip's data; ValueError saying what is wrong.

    The amount must be a JSON number: the approval condition compares numbers only, so a trip
    whose amount came as the string "5000" would skip its approval. Every trip worker checks
    this first, so such a trip fails at booking, before anything is booked or charged."""
    customer = data.get("customerId")
    if not isinstance(customer, str) or not customer.strip() or len(customer) > 128:
        raise ValueError(
            f"the trip needs a customerId, text of 1 to 128 characters (got {_shown(customer)})"
        )
    amount = data.get("amount")
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not math.isfinite(amount)
        or not 0 <= amount <= MAX_AMOUNT
    ):
        raise ValueError(
            f"the trip's amount must be a JSON number from 0 to {MAX_AMOUNT} (got {_shown(amount)})"
        )
    return Trip(customer, Decimal(str(amount)).quantize(CENT))


def trip_of(data: dict[str, Any]) -> Trip:
    """`read_trip` for a handler: a malformed trip can never succeed (non-retryable)."""
    try:
        return read_trip(data)
    except ValueError as exc:
        raise NonRetryableError(str(exc)) from None


def currency(data: dict[str, Any]) -> str:
    value = data.get("currency", "USD")
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise ValueError(
            f"currency must be three capital letters such as USD (got {_shown(value)})"
        )
    return value


class Options:
    """One option object of a trip (`"flight": {"from": "LHR", "soldOut": true}`): absent means
    the defaults; each read checks its type, and a key nobody reads is refused (a typo such as
    `"form"` should not book the default silently)."""

    def __init__(self, data: dict[str, Any], name: str, known: tuple[str, ...]) -> None:
        raw = data.get(name)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(f"{name} must be a JSON object (got {_shown(raw)})")
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise ValueError(
                f"{name}: unknown option {unknown[0][:40]!r} (known: {', '.join(known)})"
            )
        self.name, self.raw = name, raw

    def text(self, key: str, default: str, max_len: int = 64) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise ValueError(
                f"{self.name}.{key} must be text of 1 to {max_len} characters (got {_shown(value)})"
            )
        return value.strip()

    def count(self, key: str, default: int, most: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ValueError(
                f"{self.name}.{key} must be a whole number from 1 to {most} (got {_shown(value)})"
            )
        return value

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if not isinstance(value, bool):
            raise ValueError(f"{self.name}.{key} must be true or false (got {_shown(value)})")
        return value


def _shown(value: object) -> str:
    return "nothing" if value is None else repr(value)[:40]


def dumps(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


def loads_values(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """A hash whose values are JSON documents, as a dict of dicts."""
    return {str(k): orjson.loads(v) for k, v in raw.items()}
