"""Starting an order saga from a document typed by a person or posted to the HTTP API.

The amount may be left out (the reference document posts only `{"items": [...]}`): it is then
computed from the unit prices the sample inventory keeps (`saga inventory set-stock SKU N
--price P`), and an order naming a product without a price is refused, saying which. The
customer is optional.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from orchestrator.ops import InputError
from orchestrator.telemetry.tracing import is_valid_traceparent
from participants.samples.order.workers import inventory
from schemas.codec import DecodeError, to_model
from schemas.messages import StartOrder, new_id

#: the discriminator spellings the codec accepts; the API and CLI fill in StartOrder
_TYPE_FIELDS = ("messageType", "message_type", "command", "type")


def start_order(doc: dict[str, Any], traceparent: str | None = None) -> StartOrder:
    """Validate an order (camelCase or snake_case); the saga id is generated when absent.

    A W3C `traceparent` given here (an HTTP header, a flag) is used when the document has none.
    """
    doc = dict(doc)
    kind = next((doc[f] for f in _TYPE_FIELDS if f in doc), None)
    if kind is None:
        doc["messageType"] = "StartOrder"
    elif kind != "StartOrder":
        raise InputError(f"expected a StartOrder, not {str(kind)[:40]!r}")
    if not doc.get("sagaId") and not doc.get("saga_id"):
        doc.pop("saga_id", None)
        doc["sagaId"] = new_id()
    if traceparent and not doc.get("traceparent"):
        if not is_valid_traceparent(traceparent):
            raise InputError(f"invalid traceparent {traceparent[:60]!r}")
        doc["traceparent"] = traceparent
    try:
        msg = to_model(doc)
    except DecodeError as exc:
        raise InputError(exc.reason) from None
    assert isinstance(msg, StartOrder)
    return msg


async def start_priced_order(
    doc: dict[str, Any], redis: Redis, prefix: str, traceparent: str | None = None
) -> StartOrder:
    """`start_order`, with the amount computed from the inventory's unit prices when the
    document has none (`InputError` naming the products without a price)."""
    if doc.get("amount") is not None:
        return start_order(doc, traceparent)
    draft = start_order({**doc, "amount": "0"}, traceparent)  # everything else checked first
    products = sorted({i.product_id for i in draft.items})
    prices = await inventory.read_prices(redis, prefix, products)
    missing = [p for p in products if p not in prices]
    if missing:
        raise InputError(
            f"the order has no amount and no price is set for {', '.join(missing)[:200]}: "
            "send an amount, or set prices with `saga inventory set-stock SKU N --price P`"
        )
    amount = sum((prices[i.product_id] * i.quantity for i in draft.items), Decimal(0))
    priced = {k: v for k, v in doc.items() if k not in ("saga_id", "sagaId", "amount")}
    return start_order({**priced, "sagaId": draft.saga_id, "amount": str(amount)}, traceparent)
