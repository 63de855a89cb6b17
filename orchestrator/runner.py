"""Process entry: build the daemon from settings, wire SIGTERM/SIGINT to a clean drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from orchestrator.config import OrchestratorSettings
from orchestrator.daemon import Orchestrator
from orchestrator.errors import ConfigError
from orchestrator.logs import configure
from orchestrator.sagas import load_registry


async def serve(settings: OrchestratorSettings) -> None:
    orch = Orchestrator(settings, load_registry(settings.saga_modules))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, orch.stop)
    await orch.run()


def run(settings: OrchestratorSettings) -> None:
    configure(settings.log_format, settings.log_level)
    if settings.schema_registry_url or settings.output_format == "avro":
        from schemas import avro
        from schemas.registry import RegistryError

        try:
            avro.prepare(settings)  # blocking registry calls, so before the event loop starts
        except RegistryError as exc:
            raise ConfigError(f"schema registry: {exc}") from exc
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:
        asyncio.run(serve(settings))
