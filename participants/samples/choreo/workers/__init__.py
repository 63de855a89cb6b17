"""The three services of the choreography sample, each a `Participant` that reacts to events
(`saga participant run choreo-inventory|choreo-payment|choreo-shipping`, or `choreo` for all
three in one process), and the readers of what they did."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from participants.keys import key_for
from participants.participant import Participant
from participants.samples.choreo.config import ChoreoConfig
from participants.samples.choreo.workers import inventory, payment, shipping


def build_all(config: ChoreoConfig | None = None) -> list[Participant]:
    config = config or ChoreoConfig()
    return [inventory.build(config), payment.build(config), shipping.build(config)]


async def read_records(redis: Redis, prefix: str, saga_id: str) -> dict[str, Any]:
    """What each service recorded for one order: reservation, charge, shipment (None: none)."""
    out: dict[str, Any] = {}
    for name, service, key in (
        ("reservation", inventory.NAME, "reservations"),
        ("charge", payment.NAME, "charges"),
        ("shipment", shipping.NAME, "shipments"),
    ):
        raw = await redis.hget(key_for(redis, prefix, service, key), saga_id)
        out[name] = orjson.loads(raw) if raw else None
    return out
