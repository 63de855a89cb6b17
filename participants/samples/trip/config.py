"""Settings of the trip sample's saga definition (env prefix `SAGA_`).

The definition is built when the orchestrator imports the saga module
(`participants.samples.trip.saga`), so these are read once, at that import: changing one takes
an orchestrator restart, and applies to trips that have not reached the approval stage yet (the
condition is evaluated when that stage begins).
"""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class TripConfig(BaseSettings):
    """`SAGA_TRIP_APPROVAL_THRESHOLD`: trips whose `amount` is above it wait for an `approve`
    signal before payment; `SAGA_TRIP_APPROVAL_TIMEOUT_S`: how long such a trip waits before
    it fails and its bookings are cancelled."""

    model_config = SettingsConfigDict(env_prefix="SAGA_", env_file=".env", extra="ignore")

    trip_approval_threshold: float = Field(default=1000, ge=0, le=1e12, allow_inf_nan=False)
    trip_approval_timeout_s: float = Field(default=86_400, gt=0, le=366 * 86_400)

    def threshold(self) -> int | float:
        """The threshold as the condition compares it: a whole number shows as `amount > 1000`,
        not `amount > 1000.0`."""
        t = self.trip_approval_threshold
        return int(t) if t.is_integer() else t


def load_config() -> TripConfig:
    """`TripConfig()` from the environment; a bad value is one ValueError line naming the
    variable (the orchestrator reports it as the saga module's import error)."""
    try:
        return TripConfig()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "SAGA_" + "_".join(str(p) for p in err["loc"]).upper()
        raise ValueError(f"{name}: {err['msg']} (got {str(err.get('input'))[:40]!r})") from None
