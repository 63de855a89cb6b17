"""Redis going away under the orchestrator: inputs wait (retried with backoff, never
dead-lettered, never lost) and every saga completes once Redis is back."""

from __future__ import annotations

from urllib.parse import urlparse

from schemas.config import Settings
from tests.support.kafka import produce, read_all, wait_for
from tests.support.orch import SagaReader, running
from tests.support.proxy import CuttableProxy
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_e2e import start_order


async def test_redis_outage_is_retried_not_dead_lettered(settings: Settings) -> None:
    """Cut the orchestrator's Redis mid-run: it retries, then finishes every saga exactly once."""
    url = urlparse(settings.redis_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 6379)
    await proxy.start()
    through_proxy = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{proxy.port}{url.path}"}
    )
    reader = SagaReader(settings)  # reads Redis directly, not through the proxy
    first = [f"out-a{i}" for i in range(30)]
    second = [f"out-b{i}" for i in range(30)]
    try:
        async with ScriptedParticipant(settings), running(through_proxy) as orch:
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in first]
            )
            await reader.wait_final(first)
            proxy.cut()
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in second]
            )

            async def retrying() -> bool:
                return orch.metrics.infra_errors >= 2

            await wait_for(retrying, 60, "the orchestrator to hit and retry the outage")
            for sid in second:
                assert await reader.state(sid) is None  # nothing half-applied meanwhile
            proxy.restore()
            states = await reader.wait_final(second, timeout_s=90)
        assert set(states.values()) == {"completed"}
        for sid in second:
            assert (await reader.fields(sid))["version"] == "5"
        assert await read_all(settings, settings.dlq_topic, expect=1, timeout_s=3) == []
    finally:
        await proxy.stop()
        await reader.aclose()
