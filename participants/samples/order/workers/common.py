"""Helpers the sample workers share: the participant with its middleware, and reading the order
out of a command."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from participants.errors import NonRetryableError
from participants.participant import Participant
from participants.samples.faults.http import start_beside
from participants.samples.faults.inject import FaultInjection
from participants.samples.order.config import OrderConfig
from participants.scripts import GuardedScript
from schemas.config import Settings

CENT = Decimal("0.01")


def participant(name: str, config: OrderConfig | None = None, http_offset: int = 0) -> Participant:
    """A sample participant: it takes injected faults (`saga participant fail-next NAME`...).
    With `SAGA_PARTICIPANT_HTTP_PORT` set it also serves `POST /api/test/fail-next-request`, on
    that port plus `http_offset` (so `run all` gives each of its workers a port of its own)."""
    config = config or OrderConfig()
    if config.participant_http_port:
        port = config.participant_http_port + http_offset
        start_beside(Settings(), name, config.participant_http_host, port)
    return Participant(name, middleware=[FaultInjection()])


def script(filename: str) -> GuardedScript:
    """A Lua body of the order sample (`participants/samples/order/lua/`), run in the guard."""
    return GuardedScript.from_package(filename, "participants.samples.order")


def order_items(data: dict[str, Any]) -> dict[str, int]:
    """The order's items as product -> total quantity (an order may list a product twice)."""
    items = data.get("items")
    if not isinstance(items, list) or not items:
        raise NonRetryableError("the order has no items")
    totals: dict[str, int] = {}
    for item in items:
        product = item.get("productId") if isinstance(item, dict) else None
        qty = item.get("quantity") if isinstance(item, dict) else None
        if not isinstance(product, str) or not product or not isinstance(qty, int) or qty <= 0:
            raise NonRetryableError(f"invalid order item {str(item)[:100]}")
        totals[product] = totals.get(product, 0) + qty
    return totals


def order_amount(data: dict[str, Any]) -> Decimal:
    try:
        amount = Decimal(str(data.get("amount"))).quantize(CENT)
    except (InvalidOperation, ValueError):
        raise NonRetryableError(f"invalid amount {str(data.get('amount'))[:40]!r}") from None
    if not amount.is_finite() or amount < 0:
        raise NonRetryableError(f"invalid amount {amount}")
    return amount


def text(data: dict[str, Any], name: str, default: str = "") -> str:
    value = data.get(name)
    return value if isinstance(value, str) else default


def dumps(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


def loads_values(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """A hash whose values are JSON documents, as a dict of dicts."""
    return {str(k): orjson.loads(v) for k, v in raw.items()}
