"""The shape the flight, hotel and car workers share: book one thing per trip, cancel it.

Redis (under `<prefix>:<participant>:`):
  bookings  hash  saga id -> {"bookingId", "customerId", "status": booked|cancelled, <details>}
Written through `ctx.tx`: the SDK applies the write in the same atomic step as the outcome, and
its records make a booking happen once per trip however often the command comes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from participants.context import Context
from participants.errors import NonRetryableError
from participants.keys import key_for
from participants.participant import Participant
from participants.samples.trip.workers.common import (
    Options,
    dumps,
    loads_values,
    participant,
    trip_of,
)
from schemas.messages import SagaCommand

#: (the trip's option object) -> what is booked, as text; ValueError when an option is malformed,
#: NonRetryableError when it cannot be booked (sold out...)
Details = Callable[[Options], dict[str, str]]


@dataclass(frozen=True)
class Booking:
    """What differs between the flight, hotel and car workers."""

    participant: str
    action: str
    compensation: str
    #: the key of the trip's option object in the saga data, and the names it may hold
    option: str
    known: tuple[str, ...]
    #: the booking id's prefix (`FL-...`)
    id_prefix: str
    details: Details


def booking_id(prefix: str, saga_id: str) -> str:
    """Deterministic: every attempt for a trip names the same booking."""
    return f"{prefix}-{hashlib.sha256(saga_id.encode()).hexdigest()[:10].upper()}"


def build_booking(kind: Booking) -> Participant:
    """A worker that books `kind` for a trip (result: the booking id and its details) and
    cancels it."""
    svc = participant(kind.participant)

    @svc.action(kind.action)
    async def book(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        trip = trip_of(cmd.data)
        try:
            details = kind.details(Options(cmd.data, kind.option, kind.known))
        except ValueError as exc:
            raise NonRetryableError(str(exc)) from None
        key = ctx.key("bookings")
        raw = await ctx.redis.hget(key, cmd.saga_id)
        if raw is not None:
            # Only once the SDK's records of this step have expired (they answer any later
            # attempt without running the handler); the booking stays the one made.
            existing = orjson.loads(raw)
            if existing["status"] == "cancelled":
                raise NonRetryableError(f"the {kind.option} booking of this trip was cancelled")
            return {"bookingId": existing["bookingId"]}
        bid = booking_id(kind.id_prefix, cmd.saga_id)
        doc = {"bookingId": bid, "customerId": trip.customer_id, "status": "booked", **details}
        ctx.tx.call("HSET", key, cmd.saga_id, dumps(doc))
        return {"bookingId": bid, **details}

    @svc.compensation(kind.compensation)
    async def cancel(cmd: SagaCommand, ctx: Context) -> None:
        key = ctx.key("bookings")
        raw = await ctx.redis.hget(key, cmd.saga_id)
        if raw is None:
            # Never booked (it failed, or the cancel overtook it): nothing to undo. The SDK's
            # tombstone refuses the booking should it arrive after this.
            return
        doc = orjson.loads(raw)
        if doc["status"] == "cancelled":
            return
        ctx.tx.call("HSET", key, cmd.saga_id, dumps({**doc, "status": "cancelled"}))

    return svc


async def read_bookings(redis: Redis, prefix: str, participant: str) -> dict[str, dict[str, Any]]:
    """saga id -> the booking record of one of the booking workers."""
    return loads_values(await redis.hgetall(key_for(redis, prefix, participant, "bookings")))
