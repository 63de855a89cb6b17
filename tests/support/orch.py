"""Run the orchestrator in-process against the real stack, and read saga state back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.core.definition import Registry
from orchestrator.engine import history as saga_history
from orchestrator.engine import topics
from orchestrator.engine.daemon import Orchestrator
from orchestrator.engine.keys import Keys
from orchestrator.engine.sagas import SagaModules
from orchestrator.engine.statecodec import logical_fields
from orchestrator.runner import http_beside
from participants.samples.order import saga as order_saga
from schemas.config import Settings
from tests.support.kafka import wait_for
from tests.support.sagas_fast import ORDER_FAST

FINAL_STATES = {"completed", "failed", "needs_intervention"}


def orchestrator_settings(settings: Settings, **overrides: object) -> OrchestratorSettings:
    values = settings.model_dump()
    values.update(overrides)
    return OrchestratorSettings(**values)


def with_order_starts(registry: Registry) -> SagaModules:
    """The saga types of `registry`, started by StartSaga and (as the order sample maps it)
    StartOrder."""
    return SagaModules(registry=registry, starts=dict(order_saga.STARTS))


@contextlib.asynccontextmanager
async def running(
    settings: Settings, sagas: Registry | SagaModules | None = None, **overrides: object
) -> AsyncIterator[Orchestrator]:
    """The daemon (and its HTTP API when `http_port` is given) in this event loop."""
    if not isinstance(sagas, SagaModules):
        sagas = with_order_starts(sagas or Registry([ORDER_FAST]))
        sagas.http_routes.extend(order_saga.HTTP_ROUTES)
    s = orchestrator_settings(settings, **overrides)
    # as `orchestrator.runner` does before the daemon runs: the participant command topics
    # exist (with the commands topic's partition count) before the first command is sent
    names = topics.registry_topics(s, sagas.registry)
    await asyncio.to_thread(topics.ensure, s, names)
    orch = Orchestrator(s, sagas)
    http = http_beside(s, sagas, orch)
    await http.__aenter__()
    task = asyncio.create_task(orch.run())

    async def assigned() -> bool:
        if task.done():
            task.result()
        return bool(orch.assigned)

    await wait_for(assigned, 60, "partitions assigned to the orchestrator")
    try:
        yield orch
    finally:
        orch.stop()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await http.__aexit__(None, None, None)


class SagaReader:
    def __init__(self, settings: Settings) -> None:
        self.redis = redis_factory.client(settings, decode=True)
        self.keys = Keys.of(settings)

    async def state(self, saga_id: str) -> str | None:
        return await self.redis.hget(self.keys.saga(saga_id), "state")

    async def fields(self, saga_id: str) -> dict[str, str]:
        """The saga's fields, one per attribute (`statecodec.logical_fields`), the order
        saga's steps included while pending."""
        raw = await self.redis.hgetall(self.keys.saga(saga_id))
        return logical_fields(raw, ORDER_FAST, saga_id)

    async def history(self, saga_id: str) -> list[dict[str, str]]:
        return await saga_history.read(self.redis, self.keys.history(saga_id))

    async def wait_final(self, saga_ids: list[str], timeout_s: float = 60) -> dict[str, str]:
        states: dict[str, str | None] = {}

        async def all_final() -> bool:
            async with self.redis.pipeline(transaction=False) as p:
                for sid in saga_ids:
                    p.hget(self.keys.saga(sid), "state")
                rows = await p.execute()
            states.update(zip(saga_ids, rows, strict=True))
            return all(s in FINAL_STATES for s in rows)

        try:
            await wait_for(all_final, timeout_s, f"{len(saga_ids)} sagas to finish", interval_s=0.2)
        except AssertionError:
            stuck = {k: v for k, v in states.items() if v not in FINAL_STATES}
            raise AssertionError(
                f"{len(stuck)} sagas not final: {dict(list(stuck.items())[:10])}"
            ) from None
        return {k: v or "" for k, v in states.items()}

    async def aclose(self) -> None:
        await self.redis.aclose()
