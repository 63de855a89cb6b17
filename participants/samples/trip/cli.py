"""The trip sample's CLI plug-in (entry point `saga.cli`): `saga trip start` and
`saga trip show`.

    saga trip start --customer c-1 --amount 5000 [--flight '{"from":"CDG"}'] [--saga-id trip-1]
    saga trip show trip-1        # its flight, hotel and car bookings and its charge, as JSON
"""

from __future__ import annotations

from typing import Any

import orjson
import typer

from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.ops import InputError, NotFoundError, kafka, validate
from orchestrator.ops.command import ops_command
from orchestrator.ops.plugins import Cli
from orchestrator.ops.render import Output
from participants.samples.trip.start import start_trip
from participants.samples.trip.workers import read_ledgers

trip_app = typer.Typer(help="The trip booking sample.", no_args_is_help=True)


def _amount(text: str) -> int | float:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"invalid amount {text[:40]!r}: a number such as 5000 or 199.99")
    return value


@trip_app.command("start")
@ops_command
async def start(
    settings: OrchestratorSettings,
    out: Output,
    file: str | None = typer.Option(None, "--file", "-f", help="The trip's data, a JSON file."),
    saga_id: str | None = typer.Option(None, "--saga-id", help="Default: generated."),
    customer: str | None = typer.Option(None, "--customer"),
    amount: str | None = typer.Option(None, "--amount", help="Above the threshold: approval."),
    flight: str | None = typer.Option(None, "--flight", help='JSON, e.g. {"from":"CDG"}'),
    hotel: str | None = typer.Option(None, "--hotel", help='JSON, e.g. {"city":"Paris"}'),
    car: str | None = typer.Option(None, "--car", help='JSON, e.g. {"days":3}'),
    payment_method: str | None = typer.Option(None, "--payment-method"),
) -> None:
    """Start a trip booking saga from a JSON file and/or flags (flags win); prints the saga id."""
    data: dict[str, Any] = validate.json_file(file) if file else {}
    if customer is not None:
        data["customerId"] = customer
    if amount is not None:
        data["amount"] = _amount(amount)
    for name, text in (("flight", flight), ("hotel", hotel), ("car", car)):
        if text is not None:
            data[name] = validate.json_object(text.encode(), f"--{name}")
    if payment_method is not None:
        data["paymentMethod"] = payment_method
    msg = start_trip(data, validate.saga_id(saga_id) if saga_id is not None else None)
    async with kafka.producer(settings) as p:
        await kafka.send(p, settings.commands_topic, msg, settings.output_format)
    if out.as_json:
        out.json({"sagaId": msg.saga_id, "messageId": msg.message_id})
    else:
        out.text(msg.saga_id)


@trip_app.command("show")
@ops_command
async def show(
    settings: OrchestratorSettings, out: Output, saga_id: str = typer.Argument(...)
) -> None:
    """The trip's bookings (flight, hotel, car) and its charge, as JSON."""
    validate.saga_id(saga_id)
    async with redis_factory.connected(settings, decode=True) as redis:
        ledgers = await read_ledgers(redis, settings.key_prefix)
    doc = ledgers.trip(saga_id)
    if not any(doc.values()):
        raise NotFoundError(f"no booking or charge recorded for trip {saga_id!r}")
    out.json(doc)


def register(cli: Cli) -> None:
    """Add `saga trip start` and `saga trip show`."""
    cli.app.add_typer(trip_app, name="trip")
