"""`saga participant ...` and `saga inventory ...`: each command builds settings and calls one
library function."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import typer
import uvloop
from redis.asyncio import Redis

from participants import faults
from participants.config import ParticipantConfig
from participants.keys import SdkKeys
from participants.participant import Participant
from participants.worker import run_many
from participants.workers import NAMES, build, build_all, inventory, read_ledgers
from schemas.config import Settings

T = TypeVar("T")

participant_app = typer.Typer(
    help="Run sample participant workers and inject failures.", no_args_is_help=True
)
inventory_app = typer.Typer(help="Inspect and seed the sample inventory.", no_args_is_help=True)

NAME_HELP = f"{', '.join(NAMES)}, or a custom participant as module:attribute"
COMP_HELP = "Apply to compensations too (default: forward actions only)."


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for extra in ("saga_id", "correlation_id", "command_id"):
            if hasattr(record, extra):
                doc[extra] = getattr(record, extra)
        return json.dumps(doc)


def _setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _participants(name: str, config: ParticipantConfig) -> list[Participant]:
    if name == "all":
        return build_all(config)
    if ":" in name:
        module, _, attr = name.partition(":")
        svc = getattr(importlib.import_module(module), attr)
        if not isinstance(svc, Participant):
            raise typer.BadParameter(f"{name} is not a Participant")
        return [svc]
    try:
        return [build(name, config)]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _redis_call(fn: Callable[[Redis, Settings], Awaitable[T]]) -> T:
    settings = Settings()

    async def go() -> T:
        redis = Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            return await fn(redis, settings)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def _keys(settings: Settings, name: str) -> SdkKeys:
    return SdkKeys(settings.key_prefix, name)


@participant_app.command("run")
def run_cmd(
    name: str = typer.Argument(..., help=NAME_HELP + ", or all (the four samples in one process)"),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Exit after this many seconds without a command (burst mode)."
    ),
) -> None:
    """Run a participant worker until SIGTERM/SIGINT (replicas of one participant compete)."""
    settings, config = Settings(), ParticipantConfig()
    _setup_logging(settings)
    participants = _participants(name, config)
    if settings.schema_registry_url:
        from schemas import avro

        avro.prepare(settings)  # blocking, so before the loop starts
    # uvloop: about 1.5x the commands per second of the default loop, measured on this worker.
    uvloop.run(run_many(settings, participants, None, config.worker_options(idle_exit)))


@participant_app.command("fail-next")
def fail_next_cmd(
    name: str,
    count: int = typer.Option(1, "--count", min=0),
    retryable: bool = typer.Option(True, "--retryable/--non-retryable"),
    compensations: bool = typer.Option(False, "--compensations", help=COMP_HELP),
) -> None:
    """Fail the next COUNT new commands (replicas share the count)."""
    _redis_call(lambda r, s: faults.fail_next(r, _keys(s, name), count, retryable, compensations))
    typer.echo(
        f"{name}: the next {count} commands fail ({'retryable' if retryable else 'non-retryable'})"
    )


@participant_app.command("fail-rate")
def fail_rate_cmd(
    name: str,
    rate: float = typer.Argument(
        ..., min=0.0, max=1.0, help="Probability in 0..1; 0 turns it off."
    ),
    retryable: bool = typer.Option(True, "--retryable/--non-retryable"),
    compensations: bool = typer.Option(False, "--compensations", help=COMP_HELP),
) -> None:
    """Fail a random share of new commands."""
    _redis_call(lambda r, s: faults.fail_rate(r, _keys(s, name), rate, retryable, compensations))
    typer.echo(
        f"{name}: {rate:.0%} of commands fail ({'retryable' if retryable else 'non-retryable'})"
    )


@participant_app.command("latency")
def latency_cmd(
    name: str,
    ms: int = typer.Argument(..., min=0, help="Delay before each handler runs; 0 turns it off."),
    compensations: bool = typer.Option(False, "--compensations", help=COMP_HELP),
) -> None:
    """Delay every new command by MS milliseconds."""
    _redis_call(lambda r, s: faults.latency(r, _keys(s, name), ms, compensations))
    typer.echo(f"{name}: {ms} ms added to each command")


@participant_app.command("no-reply")
def no_reply_cmd(
    name: str,
    count: int = typer.Option(1, "--count", min=0),
    after_effect: bool = typer.Option(
        False,
        "--after-effect",
        help="Run the handler and drop only the reply (a reply lost in flight).",
    ),
    compensations: bool = typer.Option(False, "--compensations", help=COMP_HELP),
) -> None:
    """Swallow the next COUNT new commands: no reply, so the orchestrator's timeout fires."""
    _redis_call(lambda r, s: faults.no_reply(r, _keys(s, name), count, after_effect, compensations))
    typer.echo(f"{name}: the next {count} commands get no reply")


@participant_app.command("clear")
def clear_cmd(name: str) -> None:
    """Remove every injected failure of a participant."""
    _redis_call(lambda r, s: faults.clear(r, _keys(s, name)))
    typer.echo(f"{name}: no injected failures")


@participant_app.command("faults")
def faults_cmd(name: str) -> None:
    """Show a participant's injected failures."""
    shown = _redis_call(lambda r, s: faults.show(r, _keys(s, name)))
    typer.echo(json.dumps(shown, indent=2, sort_keys=True))


@participant_app.command("ledger")
def ledger_cmd() -> None:
    """Print everything the sample workers recorded (stock, reservations, charges, shipments,
    notifications) as JSON."""
    ledgers = _redis_call(lambda r, s: read_ledgers(r, s.key_prefix))
    typer.echo(json.dumps(asdict(ledgers), indent=2, sort_keys=True, default=str))


@inventory_app.command("set-stock")
def set_stock_cmd(sku: str, units: int = typer.Argument(..., min=0)) -> None:
    """Set the units available for SKU."""
    _redis_call(lambda r, s: inventory.set_stock(r, s.key_prefix, sku, units))
    typer.echo(f"{sku}: {units} available")


@inventory_app.command("show")
def show_cmd(
    sku: str | None = typer.Argument(None), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Units available and reserved, per product (or for one SKU)."""

    async def read(r: Redis, s: Settings) -> dict[str, Any]:
        return {
            "available": await inventory.read_stock(r, s.key_prefix),
            "reserved": await inventory.read_reserved(r, s.key_prefix),
        }

    data = _redis_call(read)
    products = [sku] if sku else sorted(set(data["available"]) | set(data["reserved"]))
    rows = {
        p: {"available": data["available"].get(p, 0), "reserved": data["reserved"].get(p, 0)}
        for p in products
    }
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    typer.echo(f"{'product':<24} {'available':>10} {'reserved':>10}")
    for p, row in rows.items():
        typer.echo(f"{p:<24} {row['available']:>10} {row['reserved']:>10}")
