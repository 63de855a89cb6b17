"""`saga schemas ...`: check the Avro schema files, list their ids, register them."""

from __future__ import annotations

from pathlib import Path

import typer

from schemas import avro

app = typer.Typer(help="Validate and register the Avro schemas.", no_args_is_help=True)

_DIR = typer.Option(
    avro.SCHEMA_DIR, "--dir", help="Directory with <Name>.avsc files and history/<Name>.v<N>.avsc."
)


@app.command()
def check(directory: Path = _DIR) -> None:
    """Parse the schema files, compare them with the models, check backward compatibility.

    Every schema must match its message model (field names, optional vs required, types,
    defaults) and read data written with each of its older versions in history/
    (BACKWARD_TRANSITIVE). Exit 1 on any problem.
    """
    report = avro.check_contract(directory)
    for note in report.notes:
        typer.echo(f"ok: {note}")
    for problem in report.problems:
        typer.echo(f"error: {problem}", err=True)
    if not report.ok:
        typer.echo(f"schemas check failed: {len(report.problems)} problem(s)", err=True)
        raise typer.Exit(1)


@app.command("list")
def list_schemas(directory: Path = _DIR) -> None:
    """Show each message type's subject, versions and registry-less (local) schema ids."""
    from schemas.registry import subject_for

    try:
        ss = avro.load_schema_set(directory)
    except avro.SchemaFileError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1) from None
    for name in sorted(ss.current):
        ids = ", ".join(f"v{sf.version}={sf.local_id}" for sf in ss.versions(name))
        typer.echo(f"{name:<16} subject {subject_for(name):<32} local ids {ids}")


@app.command()
def register(
    url: str | None = typer.Option(
        None, "--url", help="Schema Registry URL (default: SAGA_SCHEMA_REGISTRY_URL)."
    ),
    compatibility: str = typer.Option(
        "BACKWARD_TRANSITIVE",
        "--compatibility",
        help="Compatibility level set on each subject first; KEEP leaves the registry's as is.",
    ),
    directory: Path = _DIR,
) -> None:
    """Register every current schema under its record-name subject (saga.messages.<Name>).

    Exit 1 with a one-line reason when the registry cannot be used or refuses a schema.
    """
    from schemas.config import Settings
    from schemas.registry import RegistryError, register_all

    target = url or Settings().schema_registry_url
    if not target:
        typer.echo("error: no registry URL: pass --url or set SAGA_SCHEMA_REGISTRY_URL", err=True)
        raise typer.Exit(2)
    try:
        ss = avro.load_schema_set(directory)
        level = None if compatibility.upper() == "KEEP" else compatibility
        done = register_all(target, compatibility=level, schema_set=ss)
    except avro.SchemaFileError as exc:
        typer.echo(f"error: {exc.problems[0]} (run `saga schemas check`)", err=True)
        raise typer.Exit(1) from None
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for r in done:
        typer.echo(f"registered {r.subject} id={r.schema_id}")
