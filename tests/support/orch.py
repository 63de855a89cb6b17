"""Run the orchestrator in-process against the real stack, and read saga state back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from orchestrator.config import OrchestratorSettings
from orchestrator.core.definition import Registry
from orchestrator.daemon import Orchestrator
from orchestrator.keys import Keys
from schemas.config import Settings
from tests.support.kafka import wait_for
from tests.support.sagas_fast import ORDER_FAST

FINAL_STATES = {"completed", "failed", "needs_intervention"}


def orchestrator_settings(settings: Settings, **overrides: object) -> OrchestratorSettings:
    values = settings.model_dump()
    values.update(overrides)
    return OrchestratorSettings(**values)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, registry: Registry | None = None, **overrides: object
) -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(
        orchestrator_settings(settings, **overrides), registry or Registry([ORDER_FAST])
    )
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
        await asyncio.wait_for(task, 60)


class SagaReader:
    def __init__(self, settings: Settings) -> None:
        self.redis = Redis.from_url(settings.redis_url, decode_responses=True)
        self.keys = Keys(settings.key_prefix)

    async def state(self, saga_id: str) -> str | None:
        return await self.redis.hget(self.keys.saga(saga_id), "state")

    async def fields(self, saga_id: str) -> dict[str, str]:
        return await self.redis.hgetall(self.keys.saga(saga_id))

    async def history(self, saga_id: str) -> list[dict[str, str]]:
        return [f for _, f in await self.redis.xrange(self.keys.history(saga_id))]

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
