"""Process entry: the composition root. Loads the saga modules, creates their command topics
when missing, builds the daemon and (when `http_port` is set) the HTTP API beside it, wires
SIGTERM/SIGINT to a clean drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from infra import crashpoints
from infra.retry import Backoff, Stopped, retry
from orchestrator.config import OrchestratorSettings
from orchestrator.engine import topics
from orchestrator.engine.daemon import Orchestrator
from orchestrator.engine.sagas import SagaModules, load_sagas
from orchestrator.errors import ConfigError
from orchestrator.telemetry.logs import configure

log = logging.getLogger("orchestrator")


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


async def ensure_topics(
    names: list[str], settings: OrchestratorSettings, stop: asyncio.Event
) -> bool:
    """Create the missing command topics (`orchestrator.engine.topics`), waiting for Kafka
    as the daemon does (an outage never ends it); False when stopped meanwhile."""
    try:
        for line in await retry(
            lambda: asyncio.to_thread(topics.ensure, settings, names),
            what="create the command topics",
            log=log,
            stop=stop,
            backoff=Backoff(max_s=settings.infra_backoff_max_s),
            retry_on=lambda exc: isinstance(exc, topics.KafkaUnavailable),
        ):
            log.info(line)
    except Stopped:
        return False
    return True


async def serve(settings: OrchestratorSettings, sagas: SagaModules) -> None:
    orch = Orchestrator(settings, sagas)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, orch.stop)
    names = topics.registry_topics(settings, sagas.registry)
    async with http_beside(settings, sagas, orch):
        if await ensure_topics(names, settings, orch.stop_event):
            await orch.run()


def run(settings: OrchestratorSettings) -> None:
    crashpoints.check()  # a misspelt SAGA_CRASH_AT stops start-up, not only under the CLI
    configure(settings.log_format, settings.log_level)
    sagas = load_sagas(settings.saga_modules)
    topics.registry_topics(settings, sagas.registry)  # a bad topic name: ConfigError, now
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
