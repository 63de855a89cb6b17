"""Incompatible new versions of the shipped order definition, for the replay tests (loaded by
`saga replay --definition tests.golden.variants:<NAME>` as a user's module would be)."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.definition import SagaDefinition, StepDef
from participants.samples.order.saga import ORDER_FULFILLMENT
from tests.support.sagas_fast import ORDER_FAST

_FRAUD = StepDef("check_fraud", "fraud", "CheckOrder", "ForgetOrder")


def _inserted(d: SagaDefinition) -> SagaDefinition:
    """A fraud check inserted between the reservation and the payment."""
    first, *rest = d.steps
    return SagaDefinition(d.name, d.version + 1, (first, replace(_FRAUD), *rest))


#: version 2: a step inserted after reserve_inventory
ORDER_STEP_INSERTED = _inserted(ORDER_FULFILLMENT)
#: the same change to the fast-timeout order saga the e2e tests run
ORDER_FAST_STEP_INSERTED = _inserted(ORDER_FAST)
#: version 2: reserve_inventory's compensation renamed (ReleaseReservation -> CancelReservation)
ORDER_COMPENSATION_RENAMED = SagaDefinition(
    ORDER_FULFILLMENT.name,
    2,
    tuple(
        replace(s, compensation="CancelReservation") if s.name == "reserve_inventory" else s
        for s in ORDER_FULFILLMENT.steps
    ),
)
#: version 2: longer timeouts: nothing a recorded path went through
ORDER_COMPATIBLE = SagaDefinition(
    ORDER_FULFILLMENT.name,
    2,
    tuple(replace(s, timeout_s=120) for s in ORDER_FULFILLMENT.steps),
)
