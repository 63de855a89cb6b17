"""Shared fixtures: real Kafka and Redis, and per-test topics and key prefixes.

Where the infrastructure comes from, in order: KAFKA_BOOTSTRAP_SERVERS / REDIS_URL when set; else
testcontainers when a Docker engine answers; else the project's own `scripts/stack up`. With
CI=true, missing infrastructure fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from infra import kafka
from schemas.config import Settings

if TYPE_CHECKING:
    from tests.support.orch import SagaReader

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Infra:
    bootstrap: str
    redis_url: str


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"infrastructure missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    bootstrap = os.environ.get("SAGA_KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS"
    )
    redis_url = os.environ.get("SAGA_REDIS_URL") or os.environ.get("REDIS_URL")
    if bootstrap and redis_url:
        yield Infra(bootstrap, redis_url)
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer().with_kraft() as kafka, RedisContainer() as redis:
            host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
            yield Infra(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")
        return
    proc = subprocess.run(
        [str(ROOT / "scripts" / "stack"), "up"], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        _missing(f"scripts/stack up failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    kport = os.environ.get("SAGA_KAFKA_PORT", "9092")
    rport = os.environ.get("SAGA_REDIS_PORT", "6379")
    yield Infra(f"127.0.0.1:{kport}", f"redis://127.0.0.1:{rport}/0")


@pytest.fixture
def settings(infra: Infra) -> Iterator[Settings]:
    """Settings pointing at the real stack, with this test's own topics and Redis key prefix."""
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        kafka_bootstrap_servers=infra.bootstrap,
        redis_url=infra.redis_url,
        commands_topic=f"t-{tag}-commands",
        events_topic=f"t-{tag}-events",
        dlq_topic=f"t-{tag}-dlq",
        topic_partitions=3,
        key_prefix=f"t{tag}",
    )
    names = [s.commands_topic, s.events_topic, s.dlq_topic]
    kafka.create_topics(s, names, 3)
    yield s
    # thousands of leftover test topics slow every broker restart
    kafka.delete_topics(s, names)


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[SagaReader]:
    """Reads this test's sagas (hash, history) back from Redis."""
    from tests.support.orch import SagaReader

    r = SagaReader(settings)
    yield r
    await r.aclose()
