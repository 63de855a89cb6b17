"""Saga modules: how saga types (and the messages that start them) reach the daemon.

A saga module is any importable Python module named in `SAGA_SAGA_MODULES` (a JSON list, e.g.
'["mycompany.sagas"]'). It exposes:

    SAGAS        list[SagaDefinition]                      required: the saga types
    STARTS       {message class: fn(msg) -> (type, data)}  optional: start messages besides
                                                           StartSaga (e.g. StartOrder)
    HTTP_ROUTES  list[orchestrator.ops.http.Route]        optional: extra HTTP API routes

The default names the shipped order saga (`participants.samples.order.saga`); naming your own
modules replaces it, so only your saga types are registered. The engine never imports a sample:
it imports whatever the setting names, exactly as it imports a user's module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.definition import Registry, SagaDefinition
from orchestrator.errors import ConfigError
from schemas.messages import Envelope

#: maps a start message to (saga type, saga data)
StartMapper = Callable[[Envelope], tuple[str, dict[str, Any]]]


@dataclass
class SagaModules:
    """What the configured saga modules provide, merged."""

    registry: Registry = field(default_factory=Registry)
    starts: dict[type[Envelope], StartMapper] = field(default_factory=dict)
    http_routes: list[Any] = field(default_factory=list)


def load_sagas(modules: list[str]) -> SagaModules:
    """Import every saga module; a module that cannot be used is a `ConfigError`."""
    out = SagaModules()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # any error in a user's module is a configuration error
            raise ConfigError(
                f"saga module {name!r} cannot be imported: {type(exc).__name__}: {exc}"
            ) from exc
        sagas = getattr(module, "SAGAS", None)
        if not isinstance(sagas, list | tuple) or not all(
            isinstance(s, SagaDefinition) for s in sagas
        ):
            raise ConfigError(f"saga module {name!r} must define SAGAS, a list of SagaDefinition")
        for s in sagas:
            out.registry.register(s)
        starts = getattr(module, "STARTS", {})
        if not isinstance(starts, dict) or not all(
            isinstance(k, type) and issubclass(k, Envelope) and callable(v)
            for k, v in starts.items()
        ):
            raise ConfigError(f"saga module {name!r}: STARTS must map message classes to functions")
        out.starts.update(starts)
        routes = getattr(module, "HTTP_ROUTES", [])
        if not isinstance(routes, list | tuple):
            raise ConfigError(f"saga module {name!r}: HTTP_ROUTES must be a list of Route")
        out.http_routes.extend(routes)
    return out


def load_registry(modules: list[str]) -> Registry:
    """Only the saga types (queries and the CLI need nothing else)."""
    return load_sagas(modules).registry
