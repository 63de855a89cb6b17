"""What the sample's services share: reading the order out of an event's data."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from participants.errors import NonRetryableError

CENT = Decimal("0.01")
MAX_ITEMS = 100


def order_items(data: dict[str, Any]) -> dict[str, int]:
    """The order's items as product -> total quantity; NonRetryableError when malformed."""
    items = data.get("items")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        raise NonRetryableError(f"the order needs 1 to {MAX_ITEMS} items")
    totals: dict[str, int] = {}
    for item in items:
        product = item.get("productId") if isinstance(item, dict) else None
        qty = item.get("quantity") if isinstance(item, dict) else None
        ok_qty = isinstance(qty, int) and not isinstance(qty, bool) and 0 < qty <= 1_000_000
        if not isinstance(product, str) or not 0 < len(product) <= 64 or not ok_qty:
            raise NonRetryableError(f"invalid order item {str(item)[:100]}")
        assert isinstance(qty, int)
        totals[product] = totals.get(product, 0) + qty
    return totals


def order_amount(data: dict[str, Any]) -> Decimal:
    """The order's amount to the cent; NonRetryableError when it is not a number >= 0."""
    raw = data.get("amount")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise NonRetryableError(f"invalid amount {str(raw)[:40]!r}")
    try:
        amount = Decimal(str(raw)).quantize(CENT)
    except (InvalidOperation, ValueError):
        raise NonRetryableError(f"invalid amount {str(raw)[:40]!r}") from None
    if not amount.is_finite() or amount < 0:
        raise NonRetryableError(f"invalid amount {amount}")
    return amount
