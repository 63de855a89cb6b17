"""Car: one rental per trip (`BookCar` / `CancelCar`).

The trip's optional `car` object: `city` (default New York), `days` (1 to 365, default 2),
`class` (default compact); `"soldOut": true` makes the booking fail non-retryably, so a test or
a demo can force this branch to fail.
"""

from __future__ import annotations

from participants.errors import NonRetryableError
from participants.participant import Participant
from participants.samples.trip.workers.booking import Booking, build_booking
from participants.samples.trip.workers.common import Options

NAME = "car"


def details(opts: Options) -> dict[str, str]:
    city, days = opts.text("city", "New York"), opts.count("days", 2, 365)
    car_class = opts.text("class", "compact")
    if opts.flag("soldOut"):
        raise NonRetryableError(f"no {car_class} car left in {city}")
    return {"city": city, "days": str(days), "class": car_class}


KIND = Booking(
    participant=NAME,
    action="BookCar",
    compensation="CancelCar",
    option="car",
    known=("city", "days", "class", "soldOut"),
    id_prefix="CR",
    details=details,
)


def build() -> Participant:
    """The car worker, as `saga participant run car` starts it."""
    return build_booking(KIND)
