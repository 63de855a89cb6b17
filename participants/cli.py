"""`saga participant ...` and `saga inventory ...` (filled in by the participants work)."""

import typer

participant_app = typer.Typer(help="Run sample participant workers and inject failures.", no_args_is_help=True)
inventory_app = typer.Typer(help="Inspect and seed the sample inventory.", no_args_is_help=True)
