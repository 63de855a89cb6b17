"""The saga types the daemon knows: the built-in order fulfillment saga plus user modules.

A user module named in `SAGA_SAGA_MODULES` (a JSON list, e.g. '["mycompany.sagas"]') exposes
`SAGAS: list[SagaDefinition]`; no edit of this package is needed.
"""

from __future__ import annotations

import importlib

from orchestrator.core.definition import Registry, SagaDefinition, default_registry
from orchestrator.errors import ConfigError


def load_registry(modules: list[str]) -> Registry:
    registry = default_registry()
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
            registry.register(s)
    return registry
