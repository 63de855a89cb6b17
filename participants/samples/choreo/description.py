"""How the tracker reads the sample's events: `saga tracker run
participants.samples.choreo.description:ORDER`."""

from __future__ import annotations

from orchestrator.core.choreography import Choreography, Step

ORDER = Choreography(
    "order_choreography",
    start="OrderPlaced",
    steps=(
        Step(
            "reserve",
            "choreo-inventory",
            completed="InventoryReserved",
            failed="InventoryFailed",
            compensated="InventoryReleased",
        ),
        Step(
            "charge",
            "choreo-payment",
            completed="PaymentCompleted",
            failed="PaymentFailed",
            compensated="PaymentRefunded",
        ),
        Step("ship", "choreo-shipping", completed="OrderShipped", failed="ShippingFailed"),
    ),
    completed=("OrderShipped",),
    failed=("InventoryReleased", "InventoryFailed"),
)
