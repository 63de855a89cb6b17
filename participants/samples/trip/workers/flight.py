"""Flight: one flight per trip (`BookFlight` / `CancelFlight`).

The trip's optional `flight` object: `from`, `to` (default LHR -> JFK), `date` (text, default
"any"); `"soldOut": true` makes the booking fail non-retryably, so a test or a demo can force
this branch to fail.
"""

from __future__ import annotations

from participants.errors import NonRetryableError
from participants.participant import Participant
from participants.samples.trip.workers.booking import Booking, build_booking
from participants.samples.trip.workers.common import Options

NAME = "flight"


def details(opts: Options) -> dict[str, str]:
    origin, destination = opts.text("from", "LHR"), opts.text("to", "JFK")
    date = opts.text("date", "any")
    if opts.flag("soldOut"):
        raise NonRetryableError(f"flight sold out: {origin} -> {destination} on {date}")
    return {"from": origin, "to": destination, "date": date}


KIND = Booking(
    participant=NAME,
    action="BookFlight",
    compensation="CancelFlight",
    option="flight",
    known=("from", "to", "date", "soldOut"),
    id_prefix="FL",
    details=details,
)


def build() -> Participant:
    """The flight worker, as `saga participant run flight` starts it."""
    return build_booking(KIND)
