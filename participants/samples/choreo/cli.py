"""The choreography sample's CLI plug-in (entry point `saga.cli`): `saga choreo ...`.

saga choreo set-stock sku-1 10
saga choreo place-order --item sku-1:2 --amount 42.50 --address "1 Main St" [--saga-id o-1]
saga choreo show o-1     # what inventory, payment and shipping recorded for it, as JSON
"""

from __future__ import annotations

from typing import Any

import typer

from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.ops import InputError, NotFoundError, kafka, validate
from orchestrator.ops.command import ops_command
from orchestrator.ops.plugins import Cli
from orchestrator.ops.render import Output
from participants.samples.choreo.config import ChoreoConfig
from participants.samples.choreo.start import place_order
from participants.samples.choreo.workers import inventory, read_records
from schemas.choreography import encode_event, event_headers

choreo_app = typer.Typer(help="The choreography sample (no orchestrator).", no_args_is_help=True)


def _items(specs: list[str]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        product, sep, qty = spec.rpartition(":")
        if not sep or not product or not qty.isdigit() or int(qty) < 1:
            raise InputError(f"invalid --item {spec[:40]!r}: PRODUCT:QUANTITY, e.g. sku-1:2")
        out.append({"productId": product, "quantity": int(qty)})
    return out


@choreo_app.command("place-order")
@ops_command
async def place(
    settings: OrchestratorSettings,
    out: Output,
    item: list[str] = typer.Option(..., "--item", help="PRODUCT:QUANTITY, repeatable."),
    amount: str = typer.Option(..., "--amount", help="e.g. 42.50"),
    address: str | None = typer.Option(None, "--address", help="Without one, shipping fails."),
    payment_method: str = typer.Option("card", "--payment-method"),
    saga_id: str | None = typer.Option(None, "--saga-id", help="Default: generated."),
    topic: str | None = typer.Option(None, "--topic", help="Default: SAGA_CHOREO_TOPIC."),
) -> None:
    """Publish an OrderPlaced event (the start of the choreography); prints the saga id."""
    data: dict[str, Any] = {
        "items": _items(item),
        "amount": amount,
        "paymentMethod": payment_method,
    }
    if address is not None:
        data["shippingAddress"] = address
    event = place_order(data, validate.saga_id(saga_id) if saga_id is not None else None)
    async with kafka.producer(settings) as p:
        await p.send_and_wait(
            topic or ChoreoConfig().choreo_topic,
            encode_event(event),
            event.saga_id.encode(),
            headers=event_headers(event),
        )
    if out.as_json:
        out.json({"sagaId": event.saga_id, "eventId": event.event_id})
    else:
        out.text(event.saga_id)


@choreo_app.command("set-stock")
@ops_command
async def set_stock(
    settings: OrchestratorSettings,
    out: Output,
    product: str = typer.Argument(...),
    units: int = typer.Argument(..., min=0, max=1_000_000_000),
) -> None:
    """Set a product's stock in the choreography's inventory."""
    if not 0 < len(product) <= 64:
        raise InputError("the product id must be 1 to 64 characters")
    async with redis_factory.connected(settings, decode=True) as redis:
        stock = inventory.keys(settings.key_prefix, settings.redis_cluster)[0]
        await redis.hset(stock, product, units)
    out.text(f"{product}: {units}")


@choreo_app.command("show")
@ops_command
async def show(
    settings: OrchestratorSettings, out: Output, saga_id: str = typer.Argument(...)
) -> None:
    """What inventory, payment and shipping recorded for an order, as JSON."""
    validate.saga_id(saga_id)
    async with redis_factory.connected(settings, decode=True) as redis:
        doc = await read_records(redis, settings.key_prefix, saga_id)
    if not any(doc.values()):
        raise NotFoundError(f"no service recorded anything for order {saga_id!r}")
    out.json(doc)


def register(cli: Cli) -> None:
    """Add `saga choreo ...`."""
    cli.app.add_typer(choreo_app, name="choreo")
