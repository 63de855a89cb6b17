"""Redis going away under the orchestrator: inputs wait (retried with backoff, never
dead-lettered, never lost) and every saga completes once Redis is back.

Two cuts: one while the daemon is idle between two waves of sagas, and one in the middle of a
batch, after its step pipeline ran in Redis and before the daemon read the replies (the steps
are applied, the daemon does not know it). Both wait for the consumer group's committed offsets
to reach the end of the input topics: everything consumed was finished and committed."""

from __future__ import annotations

from urllib.parse import urlparse

import httpx

from orchestrator.core.definition import Registry
from orchestrator.engine.daemon import Orchestrator
from schemas.config import Settings
from tests.support import commands
from tests.support.kafka import produce, wait_for
from tests.support.midcut import StepCutProxy, step_marker, wrote_commands
from tests.support.offsets import end_offsets, wait_committed_to_end
from tests.support.orch import SagaReader, running
from tests.support.proxy import CuttableProxy
from tests.support.sagas_patient import ORDER_PATIENT
from tests.support.scripted import ScriptedParticipant
from tests.test_engine_redis_faults import free_port, readyz_shows
from tests.test_orchestrator_crash import assert_exactly_once
from tests.test_orchestrator_e2e import start_order

N_MID = 400


def via(settings: Settings, proxy: CuttableProxy) -> Settings:
    """`settings` with Redis reached through `proxy` (same database)."""
    path = urlparse(settings.redis_url).path
    return settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{proxy.port}{path}"})


def target(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.redis_url)
    return url.hostname or "127.0.0.1", url.port or 6379


def redis_retries(orch: Orchestrator) -> int:
    """Retried Redis failures the daemon counted (saga_infra_errors_total{source="redis"})."""
    return sum(n for (src, _), n in orch.metrics.infra_errors_by_kind.items() if src == "redis")


async def nothing_dead_lettered(settings: Settings) -> None:
    """Read after the offsets were committed (dead letters are acked before the commit)."""
    ends = await end_offsets(settings, [settings.dlq_topic])
    assert set(ends.values()) == {0}, f"records in the dead-letter topic: {ends}"


async def test_redis_outage_is_retried_not_dead_lettered(
    settings: Settings, reader: SagaReader
) -> None:
    """Cut the orchestrator's Redis while it is idle: it retries, then finishes every saga
    exactly once and commits every input."""
    proxy = CuttableProxy(*target(settings))
    await proxy.start()
    first = [f"out-a{i}" for i in range(30)]
    second = [f"out-b{i}" for i in range(30)]
    topics = [settings.commands_topic, settings.events_topic]
    try:
        async with ScriptedParticipant(settings), running(via(settings, proxy)) as orch:
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in first]
            )
            await reader.wait_final(first)
            proxy.cut()
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in second]
            )

            async def retrying() -> bool:
                return redis_retries(orch) >= 2

            await wait_for(retrying, 60, "the orchestrator to hit and retry the outage")
            for sid in second:
                assert await reader.state(sid) is None  # nothing half-applied meanwhile
            proxy.restore()
            states = await reader.wait_final(second, timeout_s=90)
            await wait_committed_to_end(settings, orch.s.group, topics, timeout_s=60)
        assert set(states.values()) == {"completed"}
        for sid in second:
            assert (await reader.fields(sid))["version"] == "5"
        await nothing_dead_lettered(settings)
    finally:
        await proxy.stop()


async def versions(reader: SagaReader, ids: list[str]) -> dict[str, int]:
    async with reader.redis.pipeline(transaction=False) as p:
        for sid in ids:
            p.hget(reader.keys.saga(sid), "version")
        rows = await p.execute()
    return {sid: int(v or 0) for sid, v in zip(ids, rows, strict=True)}


async def test_redis_cut_mid_batch_applies_nothing_twice_and_loses_nothing(
    settings: Settings, reader: SagaReader
) -> None:
    """With sagas at every stage, cut Redis right after a batch's step pipeline ran there and
    before the daemon read a byte of the replies. The daemon retries (counted, named in
    /readyz) while the cut lasts; once Redis is back it finds the steps it never heard back
    from already applied (duplicates, not applied again), the relay publishes the commands
    those steps wrote, every saga completes with exactly 5 applied transitions and one command
    id per step, nothing is dead-lettered, and the committed offsets reach the topics' ends."""
    proxy = StepCutProxy(*target(settings), step_marker(), wrote_commands)
    await proxy.start()
    ids = [f"mid-{i}" for i in range(N_MID)]
    topics = [settings.commands_topic, settings.events_topic]
    port = free_port()
    try:
        async with (
            ScriptedParticipant(settings, batch_delay_s=0.05) as participant,
            running(via(settings, proxy), Registry([ORDER_PATIENT]), http_port=port) as orch,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        ):
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids]
            )

            async def flowing() -> bool:
                return max((await versions(reader, ids)).values()) >= 3

            await wait_for(flowing, 120, "steps to flow (two replies applied to a saga)")
            proxy.arm()

            async def fired() -> bool:
                return proxy.fired.is_set()

            await wait_for(fired, 60, "a step pipeline to reach Redis and the cable to be cut")
            retries_at_cut = redis_retries(orch)
            # the cut fell mid-run: sagas part-way through, and steps Redis ran unheard of
            at_cut = await versions(reader, ids)
            partial = [sid for sid, v in at_cut.items() if 1 < v < 5]
            assert partial, f"no saga was part-way at the cut: {sorted(set(at_cut.values()))}"
            lost = proxy.lost_replies()
            applied = [r for r in lost if r.code == 1]
            written = sum(r.outbox_ids for r in applied)
            assert written, f"no command written in the dropped replies {proxy.dropped[:300]!r}"
            assert proxy.steps_sent >= len(lost)

            async def retrying() -> bool:
                return redis_retries(orch) >= retries_at_cut + 3

            await wait_for(retrying, 60, "the daemon to meet the cut and retry it")
            await readyz_shows(http, "redis: ")  # the loop's own failure, not only the ping
            proxy.restore()

            await assert_exactly_once(reader, participant, ids)
            ends = await wait_committed_to_end(settings, orch.s.group, topics, timeout_s=90)
            # starts, 4 commands and 4 replies each; per participant, the commands are on
            # topics of their own, which the orchestrator does not read
            sent = sum(ends.values())
            if commands.per_participant(settings):
                sent += await commands.records_on(settings, ORDER_PATIENT)
            assert sent >= N_MID * 9
            # the steps whose replies were lost were recognised on retry, not applied again
            assert orch.metrics.duplicates >= len(applied), (orch.metrics.duplicates, lost)
            # and the commands they wrote reached the participant through the relay
            assert orch.metrics.outbox_republished >= written, (written, lost)

            async def outbox_empty() -> bool:
                outboxes = [reader.keys.outbox_of(p) for p in reader.keys.all_partitions()]
                return sum([int(await reader.redis.xlen(k)) for k in outboxes]) == 0

            await wait_for(outbox_empty, 30, "the outbox to be empty")

            async def ready_again() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await wait_for(ready_again, 30, "/readyz to be ready again")
        await nothing_dead_lettered(settings)
    finally:
        await proxy.stop()
