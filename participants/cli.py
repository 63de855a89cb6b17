"""`saga participant run NAME`: run participant workers until SIGTERM/SIGINT.

NAME is `module:attribute`, or a short name an installed package declares in the entry point
group `saga.participants`:

    [project.entry-points."saga.participants"]
    loyalty = "mypkg.loyalty:svc"

Either names a `Participant`, a list of them (run in one process), or a function without
arguments returning either. CLI plug-ins (`orchestrator.ops.plugins`) add their own commands to
this group, as the samples' fault injection does.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import typer
import uvloop

from participants.config import ParticipantConfig
from participants.participant import Participant
from participants.worker import run_many
from schemas.config import Settings

GROUP = "saga.participants"

participant_app = typer.Typer(help="Run participant workers.", no_args_is_help=True)


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
    for noisy in ("aiokafka", "librdkafka"):  # their info lines are per connection
        logging.getLogger(noisy).setLevel(logging.WARNING)


def installed() -> list[str]:
    """The short names installed packages declare (entry points `saga.participants`)."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def participants_named(name: str) -> list[Participant]:
    """The participants NAME stands for (`module:attribute` or an installed short name).
    ValueError says what is wrong with NAME."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load {name}: {exc}") from None
    else:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            known = ", ".join(installed()) or "none installed"
            raise ValueError(f"unknown participant {name!r} (known: {known}; or module:attribute)")
        target = found[0].load()
    if callable(target) and not isinstance(target, Participant):
        target = target()
    participants = [target] if isinstance(target, Participant) else target
    if not _all_participants(participants):
        raise ValueError(
            f"{name} is not a Participant, a list of them, or a function returning one"
        )
    return list(participants)


def _all_participants(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and bool(value)
        and all(isinstance(p, Participant) for p in value)
    )


@participant_app.command("run")
def run_cmd(
    name: str = typer.Argument(
        ..., help="module:attribute, or an installed name (the samples: all, inventory, ...)."
    ),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Exit after this many seconds without a command (burst mode)."
    ),
) -> None:
    """Run a participant worker until SIGTERM/SIGINT (replicas of one participant compete)."""
    settings, config = Settings(), ParticipantConfig()
    _setup_logging(settings)
    try:
        participants = participants_named(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if settings.schema_registry_url:
        from schemas import avro

        avro.prepare(settings)  # blocking, so before the loop starts
    # uvloop: about 1.5x the commands per second of the default loop, measured on this worker.
    uvloop.run(run_many(settings, participants, None, config.worker_options(idle_exit)))
