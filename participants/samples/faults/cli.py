"""`saga participant fail-next|fail-rate|latency|no-reply|clear|faults`: the fault injection
sample's CLI plug-in (entry point `saga.cli`). Each command writes or reads the participant's
faults hash; the workers that install `FaultInjection` apply it."""

from __future__ import annotations

import json

import typer

from orchestrator.ops.plugins import Cli
from participants.keys import SdkKeys
from participants.samples.cli_support import redis_call
from participants.samples.faults import inject
from schemas.config import Settings

COMP_HELP = "Apply to compensations too (default: forward actions only)."


def _keys(settings: Settings, name: str) -> SdkKeys:
    return SdkKeys(settings.key_prefix, name)


def fail_next_cmd(
    name: str,
    count: int = typer.Option(1, "--count", min=0),
    retryable: bool = typer.Option(True, "--retryable/--non-retryable"),
    compensations: bool = typer.Option(False, "--compensations", help=COMP_HELP),
) -> None:
    """Fail the next COUNT new commands (replicas share the count)."""
    redis_call(lambda r, s: inject.fail_next(r, _keys(s, name), count, retryable, compensations))
    typer.echo(
        f"{name}: the next {count} commands fail ({'retryable' if retryable else 'non-retryable'})"
    )


def fail_rate_cmd(
    name: str,
    rate: float = typer.Argument(
        ..., min=0.0, max=1.0, help="Probability in 0..1; 0 turns it off."
    ),
    retryable: bool = typer.Option(True, "--retryable/--non-retryable"),
    compensations: bool = typer.Option(False, "--compensations", help=COMP_HELP),
) -> None:
    """Fail a random share of new commands."""
    redis_call(lambda r, s: inject.fail_rate(r, _keys(s, name), rate, retryable, compensations))
    typer.echo(
        f"{name}: {rate:.0%} of commands fail ({'retryable' if retryable else 'non-retryable'})"
    )


def latency_cmd(
    name: str,
    ms: int = typer.Argument(..., min=0, help="Delay before each handler runs; 0 turns it off."),
    compensations: bool = typer.Option(False, "--compensations", help=COMP_HELP),
) -> None:
    """Delay every new command by MS milliseconds."""
    redis_call(lambda r, s: inject.latency(r, _keys(s, name), ms, compensations))
    typer.echo(f"{name}: {ms} ms added to each command")


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
    redis_call(lambda r, s: inject.no_reply(r, _keys(s, name), count, after_effect, compensations))
    typer.echo(f"{name}: the next {count} commands get no reply")


def clear_cmd(name: str) -> None:
    """Remove every injected failure of a participant."""
    redis_call(lambda r, s: inject.clear(r, _keys(s, name)))
    typer.echo(f"{name}: no injected failures")


def faults_cmd(name: str) -> None:
    """Show a participant's injected failures."""
    shown = redis_call(lambda r, s: inject.show(r, _keys(s, name)))
    typer.echo(json.dumps(shown, indent=2, sort_keys=True))


def register(cli: Cli) -> None:
    """Add the fault injection commands to `saga participant`."""
    cli.participant.command("fail-next")(fail_next_cmd)
    cli.participant.command("fail-rate")(fail_rate_cmd)
    cli.participant.command("latency")(latency_cmd)
    cli.participant.command("no-reply")(no_reply_cmd)
    cli.participant.command("clear")(clear_cmd)
    cli.participant.command("faults")(faults_cmd)
