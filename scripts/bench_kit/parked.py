"""A saga module for the in-flight mode: the order saga, under another name, whose first step
goes to a participant that nobody runs, with a timeout of a day. Started with StartSaga, such a
saga waits for its first reply for the whole run: an in-flight four-step order saga that costs
the rest of the system nothing but its memory and its timer.

The orchestrator loads it beside the order saga (`SAGA_SAGA_MODULES`).
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.definition import SagaDefinition
from participants.samples.order import saga as order_saga

PARKED_TYPE = "order_parked"
#: no process of the bench runs this participant
SILENT_PARTICIPANT = "bench-silent"
DAY_S = 24 * 3600.0

first, *rest = order_saga.ORDER_FULFILLMENT.steps
ORDER_PARKED = SagaDefinition(
    name=PARKED_TYPE,
    version=1,
    steps=(replace(first, participant=SILENT_PARTICIPANT, timeout_s=DAY_S), *rest),
)

SAGAS = [ORDER_PARKED]
#: SAGA_SAGA_MODULES for an orchestrator that runs both the order saga and this one
MODULES = f'["{order_saga.__name__}", "{__name__}"]'
