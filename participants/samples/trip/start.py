"""Starting a trip from what a person typed (`saga trip start`): the generic StartSaga, with the
trip's data checked first the way the workers will check it, so a malformed trip is refused at
the prompt instead of failing at booking."""

from __future__ import annotations

import contextlib
from typing import Any

from orchestrator.ops import InputError
from participants.errors import NonRetryableError
from participants.samples.trip.workers import BOOKERS
from participants.samples.trip.workers.common import Options, currency, read_trip
from schemas.messages import StartSaga, new_id

SAGA_TYPE = "trip_booking"


def check_trip(data: dict[str, Any]) -> None:
    """InputError saying what the workers would refuse as malformed. A trip they would refuse
    for business reasons (`"soldOut": true`, the hotel in Atlantis) is a valid request: it is
    how a failing branch is asked for."""
    try:
        read_trip(data)
        currency(data)
        for m in BOOKERS:
            with contextlib.suppress(NonRetryableError):  # sold out: a valid request
                m.KIND.details(Options(data, m.KIND.option, m.KIND.known))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def start_trip(data: dict[str, Any], saga_id: str | None = None) -> StartSaga:
    """The StartSaga of a trip (saga id generated when not given)."""
    check_trip(data)
    try:
        return StartSaga(saga_id=saga_id or new_id(), saga_type=SAGA_TYPE, data=data)
    except ValueError as exc:  # pydantic's ValidationError: the saga id
        raise InputError(str(exc).splitlines()[-1].strip()) from None
