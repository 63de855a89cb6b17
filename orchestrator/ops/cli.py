"""The `saga` command line: each command builds settings and calls one library function."""

from __future__ import annotations

import re
from importlib import metadata

import typer

import orchestrator
from orchestrator.ops import plugins
from orchestrator.ops.cli_sagas import register as register_ops
from orchestrator.ops.doctor import run_doctor
from participants.cli import participant_app
from schemas.cli import app as schemas_app

app = typer.Typer(help="Saga orchestrator over Kafka and Redis.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
app.add_typer(participant_app, name="participant")
orchestrator_app = typer.Typer(help="Run the orchestrator daemon.", no_args_is_help=True)
app.add_typer(orchestrator_app, name="orchestrator")
register_ops(app)  # status, list, stuck, retry/abort/resume, dlq ... (ops/cli_sagas.py)
# sub-commands installed packages add (entry points "saga.cli"), the samples' among them
plugins.load(plugins.Cli(app=app, participant=participant_app))


def installed_version() -> str:
    """The installed distribution's version (what pip installed); a checkout run without
    installing (PYTHONPATH) falls back to the package's own."""
    try:
        return metadata.version("saga-orchestrator")
    except metadata.PackageNotFoundError:
        return orchestrator.__version__


def _version(value: bool) -> None:
    if value:
        typer.echo(f"saga {installed_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """Saga orchestrator over Kafka and Redis."""


@app.command()
def doctor() -> None:
    """Check that the configured Kafka and Redis answer; say plainly what is wrong if not."""
    from orchestrator.config import OrchestratorSettings

    # the orchestrator's settings: its command topics are those of SAGA_SAGA_MODULES
    rows = run_doctor(OrchestratorSettings())
    for name, ok, text in rows:
        typer.echo(f"{'ok  ' if ok else 'FAIL'} {name}: {text}")
    raise typer.Exit(0 if rows and all(ok for _, ok, _ in rows) else 1)


@orchestrator_app.command("run")
def orchestrator_run() -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT (Ctrl-C), then drain and exit."""
    from orchestrator.config import OrchestratorSettings
    from orchestrator.errors import ConfigError
    from orchestrator.runner import run

    try:
        run(OrchestratorSettings())
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def run() -> None:
    """The `saga` entry point: bad settings (environment, .env) end in one line per problem and
    exit code 2, not a traceback."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from infra import crashpoints

    try:
        crashpoints.check()
        app()
    except crashpoints.CrashPointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except (
        SettingsError
    ) as exc:  # a value that is not even parseable (e.g. a list that is not JSON)
        match = re.search(r'field "([a-z_]+)"', str(exc))
        name = f"SAGA_{match.group(1).upper()}" if match else "settings"
        typer.echo(
            f"error: setting {name}: cannot parse the value ({exc.__cause__ or exc})", err=True
        )
        raise SystemExit(2) from None
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "settings"
            name = f"SAGA_{field.upper()}" if field != "settings" else field
            # the value is shown only for a single, non-secret field: never a password, and
            # never the whole settings (which hold the passwords) for a cross-field error
            shown = field != "settings" and "password" not in field and "token" not in field
            got = f" (got {err.get('input')!r})" if shown else ""
            typer.echo(f"error: setting {name}: {err['msg']}{got}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
