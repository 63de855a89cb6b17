"""Placing an order: the `OrderPlaced` event that starts the choreography, checked the way the
services will read it, so a malformed order is refused at the prompt.

Any producer can send the same record as JSON, keyed by the saga id (the key keeps one order's
events in one partition, so they are read in order):

    echo '{"type":"OrderPlaced","sagaId":"order-c1","data":{"amount":"42.50",
           "items":[{"productId":"sku-1","quantity":2}],"shippingAddress":"1 Main St"}}' \
      | tr -d '\n' | kcat -P -b 127.0.0.1:9092 -t choreo-events -k order-c1
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from orchestrator.ops import InputError
from participants.errors import NonRetryableError
from participants.samples.choreo.description import ORDER
from participants.samples.choreo.workers.common import order_amount, order_items
from schemas.choreography import DomainEvent, derived_id
from schemas.messages import new_id


def place_order(data: dict[str, Any], saga_id: str | None = None) -> DomainEvent:
    """The OrderPlaced event of an order (saga id generated when not given)."""
    try:
        order_items(data)
        order_amount(data)
    except NonRetryableError as exc:
        raise InputError(exc.reason) from None
    sid = saga_id or new_id()
    try:
        return DomainEvent(
            event_id=derived_id(sid, ORDER.start),
            event_type=ORDER.start,
            saga_id=sid,
            saga_type=ORDER.name,
            source="saga-cli",
            data=data,
        )
    except ValidationError as exc:
        raise InputError(str(exc).splitlines()[-1].strip()) from None
