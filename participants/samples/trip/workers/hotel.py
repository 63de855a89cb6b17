"""Hotel: one stay per trip (`BookHotel` / `CancelHotel`).

The trip's optional `hotel` object: `city` (default New York), `nights` (1 to 365, default 2).
`"soldOut": true`, or the city Atlantis, make the booking fail non-retryably, so a test or a
demo can force this branch to fail.
"""

from __future__ import annotations

from participants.errors import NonRetryableError
from participants.participant import Participant
from participants.samples.trip.workers.booking import Booking, build_booking
from participants.samples.trip.workers.common import Options

NAME = "hotel"
#: no hotel is ever found there
NOWHERE = "atlantis"


def details(opts: Options) -> dict[str, str]:
    city, nights = opts.text("city", "New York"), opts.count("nights", 2, 365)
    if city.casefold() == NOWHERE:
        raise NonRetryableError(f"no hotel in {city}: the city is not on any map")
    if opts.flag("soldOut"):
        raise NonRetryableError(f"hotels sold out in {city}")
    return {"city": city, "nights": str(nights)}


KIND = Booking(
    participant=NAME,
    action="BookHotel",
    compensation="CancelHotel",
    option="hotel",
    known=("city", "nights", "soldOut"),
    id_prefix="HT",
    details=details,
)


def build() -> Participant:
    """The hotel worker, as `saga participant run hotel` starts it."""
    return build_booking(KIND)
