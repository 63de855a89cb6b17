"""The trip booking saga, as a saga module (`SAGA_SAGA_MODULES`).

    book_flight | book_hotel | book_car      one parallel stage ("book")
    approval                                 waits for the signal `approve` (or `reject`), only
                                             when amount > SAGA_TRIP_APPROVAL_THRESHOLD (1000)
    take_payment                             on `trip_payment`

Trips start with the generic start message, so `STARTS` is empty:

    {"sagaId": "trip-1", "command": "StartSaga", "sagaType": "trip_booking",
     "data": {"customerId": "c-1", "amount": 5000}}

`data` needs `customerId` and `amount` (a JSON number); `flight`, `hotel`, `car` (option
objects), `currency` and `paymentMethod` are optional (see the workers).

The definition is built from `TripConfig` when this module is imported, that is when the
orchestrator (or the CLI) loads its saga modules: the threshold and the approval timeout are
read from the environment then. The order sample's module is the default of
`SAGA_SAGA_MODULES`; name both to run both:
`SAGA_SAGA_MODULES='["participants.samples.order.saga","participants.samples.trip.saga"]'`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.conditions import Compare
from orchestrator.core.definition import SagaDefinition, StepDef, parallel, wait_for
from participants.samples.trip.config import TripConfig, load_config
from participants.samples.trip.start import SAGA_TYPE

NAME = SAGA_TYPE
#: the signals the approval step waits for
APPROVE, REJECT = "approve", "reject"


def trip_booking(config: TripConfig) -> SagaDefinition:
    """Version 1 of the trip booking saga, with `config`'s threshold and approval timeout."""
    return SagaDefinition(
        name=NAME,
        version=1,
        steps=(
            *parallel(
                "book",
                StepDef("book_flight", "flight", "BookFlight", "CancelFlight"),
                StepDef("book_hotel", "hotel", "BookHotel", "CancelHotel"),
                StepDef("book_car", "car", "BookCar", "CancelCar"),
            ),
            wait_for(
                "approval",
                APPROVE,
                reject=(REJECT,),
                timeout_s=config.trip_approval_timeout_s,
                when=Compare("amount", "gt", config.threshold()),
            ),
            StepDef("take_payment", "trip_payment", "TakePayment", "RefundPayment"),
        ),
    )


TRIP_BOOKING = trip_booking(load_config())

SAGAS = [TRIP_BOOKING]
STARTS: dict[type, Any] = {}
HTTP_ROUTES: list[Any] = []
