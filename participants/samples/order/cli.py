"""The order sample's CLI plug-in (entry point `saga.cli`): `saga start-order`,
`saga inventory set-stock|show` and `saga participant ledger`.

`saga start-order` without `--amount` (nor an amount in the file) prices the order from the
sample inventory's unit prices, which `saga inventory set-stock SKU N --price P` sets."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import typer
from redis.asyncio import Redis

from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.ops import InputError, kafka, validate
from orchestrator.ops.command import ops_command
from orchestrator.ops.plugins import Cli
from orchestrator.ops.render import Output
from participants.samples.cli_support import redis_call
from participants.samples.order.start import start_priced_order
from participants.samples.order.workers import inventory, read_ledgers
from schemas.config import Settings

inventory_app = typer.Typer(help="Inspect and seed the sample inventory.", no_args_is_help=True)


def _put(doc: dict[str, Any], camel: str, snake: str, value: object) -> None:
    if value is not None:
        doc.pop(snake, None)
        doc[camel] = value


def _item(text: str) -> dict[str, Any]:
    sku, _, qty = text.partition(":")
    if not sku or (qty and not qty.isdigit()):
        raise InputError(f"invalid item {text[:40]!r}: use SKU or SKU:QUANTITY, e.g. sku-1:2")
    return {"productId": sku, "quantity": int(qty or "1")}


@ops_command
async def start_order(
    settings: OrchestratorSettings,
    out: Output,
    file: str | None = typer.Option(None, "--file", "-f", help="StartOrder as a JSON file."),
    saga_id: str | None = typer.Option(None, "--saga-id", help="Default: generated."),
    customer: str | None = typer.Option(None, "--customer"),
    item: list[str] | None = typer.Option(None, "--item", help="SKU:QUANTITY, repeatable."),
    amount: str | None = typer.Option(None, "--amount"),
    currency: str | None = typer.Option(None, "--currency"),
    payment_method: str | None = typer.Option(None, "--payment-method"),
    address: str | None = typer.Option(None, "--address"),
    traceparent: str | None = typer.Option(None, "--traceparent", help="W3C trace context."),
) -> None:
    """Start an order saga from a JSON file and/or flags (flags win); prints the saga id. Without
    an amount, the order is priced from the inventory's prices (set-stock --price)."""
    doc = validate.json_file(file) if file else {}
    if saga_id is not None:
        _put(doc, "sagaId", "saga_id", validate.saga_id(saga_id))
    _put(doc, "customerId", "customer_id", customer)
    _put(doc, "items", "items", [_item(i) for i in item] if item else None)
    _put(doc, "amount", "amount", amount)
    _put(doc, "currency", "currency", currency)
    _put(doc, "paymentMethod", "payment_method", payment_method)
    _put(doc, "shippingAddress", "shipping_address", address)
    async with redis_factory.connected(settings, decode=True) as redis:
        msg = await start_priced_order(doc, redis, settings.key_prefix, traceparent)
    async with kafka.producer(settings) as p:
        await kafka.send(p, settings.commands_topic, msg, settings.output_format)
    if out.as_json:
        out.json({"sagaId": msg.saga_id, "messageId": msg.message_id})
    else:
        out.text(msg.saga_id)


def ledger_cmd() -> None:
    """Print everything the sample workers recorded (stock, reservations, charges, shipments,
    notifications) as JSON."""
    ledgers = redis_call(lambda r, s: read_ledgers(r, s.key_prefix))
    typer.echo(json.dumps(asdict(ledgers), indent=2, sort_keys=True, default=str))


@inventory_app.command("set-stock")
def set_stock_cmd(
    sku: str,
    units: int = typer.Argument(..., min=0),
    price: str | None = typer.Option(
        None, "--price", help="Unit price (e.g. 12.50): orders without an amount are priced."
    ),
) -> None:
    """Set the units available for SKU (and its unit price)."""
    try:
        unit_price = inventory.valid_price(price) if price is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--price") from None

    async def write(r: Redis, s: Settings) -> None:
        await inventory.set_stock(r, s.key_prefix, sku, units)
        if unit_price is not None:
            await inventory.set_price(r, s.key_prefix, sku, unit_price)

    redis_call(write)
    typer.echo(f"{sku}: {units} available" + (f" at {unit_price}" if unit_price else ""))


@inventory_app.command("show")
def show_cmd(
    sku: str | None = typer.Argument(None), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Units available and reserved, per product (or for one SKU)."""

    async def read(r: Redis, s: Settings) -> dict[str, Any]:
        return {
            "available": await inventory.read_stock(r, s.key_prefix),
            "reserved": await inventory.read_reserved(r, s.key_prefix),
            "price": await inventory.read_prices(r, s.key_prefix),
        }

    data = redis_call(read)
    products = [sku] if sku else sorted(set(data["available"]) | set(data["reserved"]))
    rows = {
        p: {
            "available": data["available"].get(p, 0),
            "reserved": data["reserved"].get(p, 0),
            "price": str(data["price"][p]) if p in data["price"] else None,
        }
        for p in products
    }
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    typer.echo(f"{'product':<24} {'available':>10} {'reserved':>10} {'price':>12}")
    for p, row in rows.items():
        price = row["price"] or "-"
        typer.echo(f"{p:<24} {row['available']:>10} {row['reserved']:>10} {price:>12}")


def register(cli: Cli) -> None:
    """Add `saga start-order`, `saga inventory ...` and `saga participant ledger`."""
    cli.app.command("start-order")(start_order)
    cli.app.add_typer(inventory_app, name="inventory")
    cli.participant.command("ledger")(ledger_cmd)
