"""The choreography sample: an order whose services react to each other's events on one topic
(`choreo-events`), with no orchestrator, built on the same SDK (`Participant.on`).

    OrderPlaced -> inventory reserves -> InventoryReserved -> payment charges ->
    PaymentCompleted -> shipping ships -> OrderShipped

    PaymentFailed -> inventory releases -> InventoryReleased            (the order is cancelled)
    ShippingFailed -> payment refunds -> PaymentRefunded -> inventory releases -> ...

`description.ORDER` tells the tracker (`saga tracker run`) how to read those events.
"""
