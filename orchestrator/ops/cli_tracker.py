"""`saga tracker run <module>:<DESCRIPTION>`: follow a choreography's events into saga hashes.

Added through the CLI plug-in mechanism (entry point `saga.cli`, `orchestrator.ops.plugins`):

    saga tracker run participants.samples.choreo.description:ORDER --topic choreo-events

DESCRIPTION names an `orchestrator.core.choreography.Choreography` (or a function without
arguments returning one). The topic comes from `--topic`, else `SAGA_CHOREO_TOPIC`, else
`choreo-events`; everything else (Kafka, Redis, key prefix, DLQ topic, retention) from the usual
`SAGA_*` settings, as for `saga orchestrator run`.
"""

from __future__ import annotations

import asyncio
import importlib

import typer

from orchestrator.config import OrchestratorSettings
from orchestrator.core.choreography import Choreography
from orchestrator.engine import tracker
from orchestrator.ops.plugins import Cli
from orchestrator.telemetry.logs import configure

DEFAULT_TOPIC = "choreo-events"

tracker_app = typer.Typer(
    help="Follow a choreographed saga's events into the saga hash (read-only).",
    no_args_is_help=True,
)


def load_description(name: str) -> Choreography:
    """The choreography `module:attribute` names; ValueError saying what is wrong."""
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{name!r}: expected module:ATTRIBUTE, e.g. mypkg.choreo:ORDER")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {name}: {exc}") from None
    if callable(target) and not isinstance(target, Choreography):
        target = target()
    if not isinstance(target, Choreography):
        raise ValueError(f"{name} is a {type(target).__name__}, not a Choreography")
    return target


@tracker_app.command("run")
def run_cmd(
    description: str = typer.Argument(..., help="module:ATTRIBUTE naming a Choreography."),
    topic: str = typer.Option(
        DEFAULT_TOPIC, "--topic", envvar="SAGA_CHOREO_TOPIC", help="The choreography's events."
    ),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Exit after this many seconds without an event."
    ),
) -> None:
    """Track a choreography's events into saga hashes until SIGTERM/SIGINT.

    Each event lands in `saga:<id>` (mode: choreography) and its history; a record that is not
    an event goes to the DLQ with the reason."""
    try:
        choreography = load_description(description)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = OrchestratorSettings()
    configure(settings.log_format, settings.log_level)
    asyncio.run(tracker.run(settings, choreography, topic, idle_exit_s=idle_exit))


def register(cli: Cli) -> None:
    """Add `saga tracker run`."""
    cli.app.add_typer(tracker_app, name="tracker")
