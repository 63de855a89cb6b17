"""The trip sample's participants (flight, hotel, car, trip_payment), and readers of their
state for demos, tests and `saga trip show`."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from infra import redis as redis_factory
from participants.participant import Participant
from participants.samples.order.workers.payment import net_by_saga  # the same ledger entries
from participants.samples.trip.workers import car, flight, hotel, payment
from participants.samples.trip.workers.booking import read_bookings
from schemas.config import Settings

#: the booking workers, in the order the saga books
BOOKERS = (flight, hotel, car)


def build_all() -> list[Participant]:
    """The four trip participants in one process (`saga participant run trip`)."""
    return [flight.build(), hotel.build(), car.build(), payment.build()]


@dataclass(frozen=True)
class TripLedgers:
    """Everything the four trip workers recorded."""

    #: participant (flight, hotel, car) -> saga id -> booking record
    bookings: dict[str, dict[str, dict[str, Any]]]
    charges: dict[str, dict[str, Any]]
    payments: list[dict[str, Any]]

    def trip(self, saga_id: str) -> dict[str, Any]:
        """One trip's records: each booking (or None) and its charge (or None)."""
        doc: dict[str, Any] = {k: v.get(saga_id) for k, v in self.bookings.items()}
        doc["payment"] = self.charges.get(saga_id)
        return doc

    def net_paid(self) -> dict[str, Decimal]:
        """Charged minus refunded per trip."""
        return net_by_saga(self.payments)


async def read_ledgers(redis: Redis, prefix: str) -> TripLedgers:
    return TripLedgers(
        bookings={m.NAME: await read_bookings(redis, prefix, m.NAME) for m in BOOKERS},
        charges=await payment.read_charges(redis, prefix),
        payments=await payment.read_ledger(redis, prefix),
    )


async def snapshot(settings: Settings) -> TripLedgers:
    """`read_ledgers` with its own connection, for tests and demo runners."""
    async with redis_factory.connected(settings, decode=True) as redis:
        return await read_ledgers(redis, settings.key_prefix)
