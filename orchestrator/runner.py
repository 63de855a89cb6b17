"""Process entry: the composition root. Loads the saga modules, builds the daemon and (when
`http_port` is set) the HTTP API beside it, wires SIGTERM/SIGINT to a clean drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from infra import crashpoints
from orchestrator.config import OrchestratorSettings
from orchestrator.engine.daemon import Orchestrator
from orchestrator.engine.sagas import SagaModules, load_sagas
from orchestrator.errors import ConfigError
from orchestrator.telemetry.logs import configure


@contextlib.asynccontextmanager
async def http_beside(
    settings: OrchestratorSettings, sagas: SagaModules, orch: Orchestrator
) -> AsyncIterator[None]:
    """The HTTP API (when `http_port` is set) for as long as the block runs."""
    if not settings.http_port:
        yield
        return
    from orchestrator.ops.http import HttpApi

    http = HttpApi(settings, sagas, orch)
    await http.start()
    try:
        yield
    finally:
        await http.stop()


async def serve(settings: OrchestratorSettings, sagas: SagaModules) -> None:
    orch = Orchestrator(settings, sagas)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, orch.stop)
    async with http_beside(settings, sagas, orch):
        await orch.run()


def run(settings: OrchestratorSettings) -> None:
    crashpoints.check()  # a misspelt SAGA_CRASH_AT stops start-up, not only under the CLI
    configure(settings.log_format, settings.log_level)
    sagas = load_sagas(settings.saga_modules)
    if settings.schema_registry_url or settings.output_format == "avro":
        from schemas import avro
        from schemas.registry import RegistryError

        try:
            avro.prepare(settings)  # blocking registry calls, so before the event loop starts
        except RegistryError as exc:
            raise ConfigError(f"schema registry: {exc}") from exc
    try:
        import uvloop

        uvloop.run(serve(settings, sagas))
    except ImportError:
        asyncio.run(serve(settings, sagas))
