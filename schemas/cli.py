"""`saga schemas ...` (filled in by the message-contract work)."""

import typer

app = typer.Typer(help="Validate and register the Avro schemas.", no_args_is_help=True)
