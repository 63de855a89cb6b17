"""Redis errors that clear by themselves (OOM under noeviction, READONLY, BUSY) under a running
orchestrator: retried with backoff, shown in /readyz and counted by kind in /metrics, never
dead-lettered or crashed on; every saga completes once Redis takes writes again.

Each test runs its own throwaway `redis-server` (Kafka is the shared stack's)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aredis
import redis.exceptions as rx

from orchestrator.engine.daemon import Orchestrator
from schemas.config import Settings
from tests.support.kafka import produce, read_all, wait_for
from tests.support.orch import SagaReader, running
from tests.support.procs import stop
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_e2e import start_order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def redis_server(tmp_path: Path, *config: str) -> AsyncIterator[int]:
    """A throwaway redis-server on a free port with `config` ("--name", "value", ...); its
    port. Stopped by pid afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (scripts/stack up installs it)")
    port = free_port()
    workdir = tmp_path / f"redis-{port}"
    workdir.mkdir()
    proc = subprocess.Popen(
        [
            *(server, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(workdir), *config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = aredis.Redis(port=port, socket_timeout=1)

    async def answers() -> bool:
        assert proc.poll() is None, "redis-server exited"
        try:
            return bool(await client.ping())
        except rx.ConnectionError:
            return False

    try:
        await wait_for(answers, 30, f"redis-server on port {port}")
        yield port
    finally:
        await client.aclose()
        stop(proc)


@contextlib.asynccontextmanager
async def orchestrated(
    settings: Settings, on_redis: Settings
) -> AsyncIterator[tuple[Orchestrator, httpx.AsyncClient]]:
    """A scripted participant (Kafka only), the daemon and its HTTP API on `on_redis`'s Redis,
    and a client for the API."""
    port = free_port()
    async with (
        ScriptedParticipant(settings),
        running(on_redis, http_port=port) as orch,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        yield orch, http


MAXMEMORY = "8mb"


async def fill_to_oom(client: aredis.Redis) -> int:
    """Write 64 KiB values until Redis (maxmemory MAXMEMORY, noeviction) refuses one with OOM;
    then pin maxmemory just under what is used, so the server stays full while the test runs
    (client buffers draining could otherwise bring it back under the limit). The number of
    values written."""
    n = 0
    with contextlib.suppress(rx.OutOfMemoryError):
        while n < 10_000:
            await client.set(f"filler:{n}", b"x" * 65536)
            n += 1
    assert n < 10_000, "Redis never refused a write"
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", used - 256 * 1024)
    return n


async def free(client: aredis.Redis, n: int) -> None:
    """Undo `fill_to_oom`: delete the values and put the limit back."""
    await client.delete(*(f"filler:{i}" for i in range(n)))
    await client.config_set("maxmemory", MAXMEMORY)


def on_port(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})


def faults_of(orch: Orchestrator, kind: str) -> int:
    return orch.metrics.infra_errors_by_kind.get(("redis", kind), 0)


async def start_sagas(settings: Settings, ids: list[str]) -> None:
    await produce(settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids])


async def readyz_shows(http: httpx.AsyncClient, needle: str) -> dict[str, Any]:
    """Wait until /readyz answers 503 with a problem that contains `needle`; its body."""
    seen: dict[str, Any] = {}

    async def shows() -> bool:
        r = await http.get("/readyz")
        seen.update(r.json())
        return r.status_code == 503 and any(needle in p for p in seen.get("problems", []))

    try:
        await wait_for(shows, 30, f"/readyz to show {needle!r}", interval_s=0.1)
    except AssertionError:
        raise AssertionError(f"/readyz never showed {needle!r}: {seen}") from None
    return seen


def metric_value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in /metrics")


async def all_completed(reader: SagaReader, ids: list[str], timeout_s: float = 90) -> None:
    states = await reader.wait_final(ids, timeout_s=timeout_s)
    assert set(states.values()) == {"completed"}, states
    for sid in ids:
        assert (await reader.fields(sid))["version"] == "5", sid


async def test_oom_under_noeviction_is_retried_shown_and_nothing_lost(
    settings: Settings, tmp_path: Path
) -> None:
    """Fill a noeviction Redis to OOM while sagas run: the daemon and the relay retry, /readyz
    names the OOM and for how long, /metrics counts it by kind; once memory is freed every
    saga completes exactly once and nothing is dead-lettered."""
    async with redis_server(
        tmp_path, "--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction"
    ) as port:
        small = on_port(settings, port)
        reader = SagaReader(small)
        filler = aredis.Redis(port=port)
        first = [f"oom-a{i}" for i in range(20)]
        second = [f"oom-b{i}" for i in range(20)]
        try:
            async with orchestrated(settings, small) as (orch, http):
                await start_sagas(settings, first)
                await all_completed(reader, first)
                assert (await http.get("/readyz")).status_code == 200
                n = await fill_to_oom(filler)
                await start_sagas(settings, second)

                async def refused() -> bool:
                    return faults_of(orch, "OOM") >= 2

                await wait_for(refused, 60, "the orchestrator to meet OOM and retry it")
                ready = await readyz_shows(http, "redis: OOM command not allowed")
                assert any("since" in p for p in ready["problems"]), ready
                text = (await http.get("/metrics")).text
                assert metric_value(text, 'saga_infra_errors_total{source="redis",kind="OOM"}') >= 2
                await free(filler, n)
                await all_completed(reader, second)

                async def ready_again() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await wait_for(ready_again, 30, "/readyz to be ready again")
            assert await read_all(settings, settings.dlq_topic, expect=1, timeout_s=3) == []
        finally:
            await filler.aclose()
            await reader.aclose()


async def test_readonly_replica_is_retried_until_promoted(
    settings: Settings, tmp_path: Path
) -> None:
    """Point the orchestrator at a replica (every write: READONLY): it retries and /readyz
    says so; promote the replica (REPLICAOF NO ONE) and every saga completes, none
    dead-lettered."""
    ids = [f"ro-{i}" for i in range(20)]
    async with (
        redis_server(tmp_path) as primary,
        redis_server(tmp_path) as replica_port,
    ):
        replica = aredis.Redis(port=replica_port, decode_responses=True)
        await replica.replicaof("127.0.0.1", primary)

        async def synced() -> bool:
            info = await replica.info("replication")
            return info.get("master_link_status") == "up"

        await wait_for(synced, 30, "the replica to sync with its primary")
        on_replica = on_port(settings, replica_port)
        reader = SagaReader(on_replica)
        try:
            async with orchestrated(settings, on_replica) as (orch, http):
                await start_sagas(settings, ids)

                async def refused() -> bool:
                    return faults_of(orch, "READONLY") >= 2

                await wait_for(refused, 60, "the orchestrator to meet READONLY and retry it")
                await readyz_shows(http, "redis: READONLY")
                text = (await http.get("/metrics")).text
                assert (
                    metric_value(text, 'saga_infra_errors_total{source="redis",kind="READONLY"}')
                    >= 2
                )
                await replica.replicaof("NO", "ONE")
                await all_completed(reader, ids)
            assert await read_all(settings, settings.dlq_topic, expect=1, timeout_s=3) == []
        finally:
            await replica.aclose()
            await reader.aclose()


async def test_busy_script_is_retried_not_crashed_on(settings: Settings, tmp_path: Path) -> None:
    """A script runs past busy-reply-threshold (every other client gets BUSY, which redis-py
    leaves an untyped ResponseError): the daemon and the relay retry it as `BusyError`, /readyz
    and /metrics name it, and the sagas started meanwhile complete."""
    ids = [f"busy-{i}" for i in range(20)]
    async with redis_server(tmp_path, "--busy-reply-threshold", "50") as port:
        busy_redis = on_port(settings, port)
        reader = SagaReader(busy_redis)
        hog = aredis.Redis(port=port, socket_timeout=30)
        try:
            async with orchestrated(settings, busy_redis) as (orch, http):
                # a read-only script spinning for 4 s of server time
                spin = (
                    "local t = tonumber(redis.call('TIME')[1]) + 4 "
                    "while tonumber(redis.call('TIME')[1]) < t do end"
                )
                script = asyncio.create_task(hog.eval(spin, 0))

                async def busy() -> bool:
                    assert not script.done() or faults_of(orch, "BUSY"), "script ended unseen"
                    return faults_of(orch, "BUSY") >= 1

                await wait_for(busy, 30, "the orchestrator to meet BUSY")
                await start_sagas(settings, ids)
                await readyz_shows(http, "redis: BUSY")
                await script
                await all_completed(reader, ids)
                text = (await http.get("/metrics")).text
                assert (
                    metric_value(text, 'saga_infra_errors_total{source="redis",kind="BUSY"}') >= 1
                )
            assert await read_all(settings, settings.dlq_topic, expect=1, timeout_s=3) == []
        finally:
            await hog.aclose()
            await reader.aclose()


async def test_busy_reply_is_a_typed_transient_error(tmp_path: Path) -> None:
    """redis-py's parser itself raises `BusyError` for a BUSY reply, for every client."""
    from infra.errors import BusyError, is_transient

    async with redis_server(tmp_path, "--busy-reply-threshold", "20") as port:
        hog, other = aredis.Redis(port=port, socket_timeout=30), aredis.Redis(port=port)
        try:
            spin = (
                "local t = tonumber(redis.call('TIME')[1]) + 2 "
                "while tonumber(redis.call('TIME')[1]) < t do end"
            )
            script = asyncio.create_task(hog.eval(spin, 0))
            caught: list[BaseException] = []

            async def refused() -> bool:
                try:
                    await other.ping()
                except rx.ResponseError as exc:
                    caught.append(exc)
                    return True
                return False

            await wait_for(refused, 10, "a BUSY reply")
            await script
            assert isinstance(caught[0], BusyError) and is_transient(caught[0])
            assert caught[0].status_code == "BUSY"
        finally:
            await hog.aclose()
            await other.aclose()
