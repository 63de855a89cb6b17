"""A user saga module for tests: the order saga with short timeouts and backoffs, so timeouts
and retries happen within seconds. Loaded with SAGA_SAGA_MODULES='["tests.support.sagas_fast"]'."""

from orchestrator.core.definition import RetryPolicy, SagaDefinition, StepDef
from participants.samples.order.saga import STARTS as ORDER_STARTS

FAST_RETRY = RetryPolicy(
    max_attempts=3, initial_backoff_s=0.1, multiplier=2.0, max_backoff_s=0.5, jitter=0.2
)
FAST_COMP_RETRY = RetryPolicy(
    max_attempts=3, initial_backoff_s=0.1, multiplier=2.0, max_backoff_s=0.5
)


def fast(
    name: str, participant: str, action: str, compensation: str, timeout_s: float = 2.0
) -> StepDef:
    return StepDef(
        name,
        participant,
        action,
        compensation,
        timeout_s=timeout_s,
        retry=FAST_RETRY,
        compensation_timeout_s=timeout_s,
        compensation_retry=FAST_COMP_RETRY,
    )


ORDER_FAST = SagaDefinition(
    "order_fulfillment",
    1,
    (
        fast("reserve_inventory", "inventory", "ReserveItems", "ReleaseReservation"),
        fast("process_payment", "payment", "ProcessPayment", "RefundPayment"),
        fast("create_shipment", "shipping", "CreateShipment", "CancelShipment"),
        fast(
            "send_confirmation", "notification", "SendOrderConfirmation", "SendCancellationNotice"
        ),
    ),
)

SAGAS = [ORDER_FAST]
STARTS = ORDER_STARTS  # StartOrder starts it, as in the order sample
