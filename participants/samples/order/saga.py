"""The order fulfillment saga of the reference document, as a saga module.

The orchestrator loads it by name (`SAGA_SAGA_MODULES`, whose default names this module), the
same way it loads a user's saga module: `SAGAS` are the saga types, `STARTS` maps the wire
message `StartOrder` to a start of `order_fulfillment`, and `HTTP_ROUTES` adds
`POST /api/orders` to the orchestrator's HTTP API.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.definition import SagaDefinition, StepDef
from participants.samples.order.http import ROUTES
from schemas.messages import Envelope, StartOrder

NAME = "order_fulfillment"

ORDER_FULFILLMENT = SagaDefinition(
    name=NAME,
    version=1,
    steps=(
        StepDef("reserve_inventory", "inventory", "ReserveItems", "ReleaseReservation"),
        StepDef("process_payment", "payment", "ProcessPayment", "RefundPayment"),
        StepDef("create_shipment", "shipping", "CreateShipment", "CancelShipment"),
        StepDef(
            "send_confirmation", "notification", "SendOrderConfirmation", "SendCancellationNotice"
        ),
    ),
)


def start_order(msg: Envelope) -> tuple[str, dict[str, Any]]:
    """A StartOrder starts an order fulfillment saga with the order as its data."""
    assert isinstance(msg, StartOrder)
    return NAME, msg.order_data()


SAGAS = [ORDER_FULFILLMENT]
STARTS = {StartOrder: start_order}
HTTP_ROUTES = ROUTES
