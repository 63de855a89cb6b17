"""The order saga with long step timeouts, for crash tests: a rebalance or a restart must not be
mistaken for a silent participant, so every saga takes exactly one attempt per step."""

from orchestrator.core.definition import SagaDefinition
from participants.samples.order.saga import STARTS as ORDER_STARTS
from tests.support.sagas_fast import ORDER_FAST, fast

ORDER_PATIENT = SagaDefinition(
    "order_fulfillment",
    1,
    tuple(
        fast(s.name, s.participant, s.action, s.compensation, timeout_s=120.0)
        for s in ORDER_FAST.steps
    ),
)

SAGAS = [ORDER_PATIENT]
STARTS = ORDER_STARTS  # StartOrder starts it, as in the order sample
