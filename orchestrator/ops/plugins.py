"""CLI plug-ins: how a package adds `saga` sub-commands without editing this one.

A distribution declares an entry point in the group `saga.cli` naming a function that takes a
`Cli` and adds commands to it:

    [project.entry-points."saga.cli"]
    order = "participants.samples.order.cli:register"

The shipped samples plug in exactly this way (`saga start-order`, `saga inventory`, the fault
injection commands under `saga participant`). A plug-in that fails to load is reported on stderr
and skipped: the rest of the CLI keeps working.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import typer

GROUP = "saga.cli"


@dataclass(frozen=True)
class Cli:
    """The command groups a plug-in may add to."""

    app: typer.Typer  # `saga ...`
    participant: typer.Typer  # `saga participant ...`


Register = Callable[[Cli], None]


def load(cli: Cli, group: str = GROUP) -> list[str]:
    """Run every installed plug-in's register function; the names of those that loaded."""
    loaded = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            register = ep.load()
            register(cli)
        except Exception as exc:  # a broken plug-in must not take the whole CLI down
            print(
                f"warning: saga CLI plug-in {ep.name!r} ({ep.value}) not loaded: {exc}",
                file=sys.stderr,
            )
            continue
        loaded.append(ep.name)
    return loaded
