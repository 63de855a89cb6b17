"""Shared fixtures: real Kafka and Redis, and per-test topics and key prefixes.

Where the infrastructure comes from, in order: KAFKA_BOOTSTRAP_SERVERS / REDIS_URL when set; else
testcontainers when a Docker engine answers; else the project's own `scripts/stack up`. With
CI=true, missing infrastructure fails the run instead of skipping.

Suites that must hold on a Redis Cluster too (the orchestrator end-to-end, crash and invariant
suites) set `pytestmark = BOTH_REDIS`: each test then runs once on the single Redis and once on
the cluster of `scripts/stack up --redis-cluster` (SAGA_REDIS_CLUSTER_URL when set, else the
URL in .stack/cluster.env, else that command is run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from infra import kafka
from schemas.config import Settings

if TYPE_CHECKING:
    from tests.support.orch import SagaReader

ROOT = Path(__file__).resolve().parent.parent
# The suite runs the command-topic mode users get: per-participant (`<commands>.<participant>`),
# unless SAGA_COMMAND_TOPICS says otherwise for the whole run; tests that read commands do so
# through tests/support/commands.py, which follows the mode. BOTH_COMMAND_TOPICS runs a test in
# both modes; tests/test_command_topics*.py compare them.


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "participant_topics(*participants): the settings fixture creates these participants' "
        "command topics with the others, as the orchestrator or scripts/stack_topics.py does "
        "before workers start (a worker subscribed to a missing topic notices it only at its "
        "next metadata refresh, up to 30 s later); nothing in single mode",
    )


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


#: run each test of a module on the single Redis and on the Redis Cluster
BOTH_REDIS = pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True)
#: the command topics of the sample sagas' participants, made before the test's workers start
ORDER_TOPICS = pytest.mark.participant_topics("inventory", "payment", "shipping", "notification")
TRIP_TOPICS = pytest.mark.participant_topics("flight", "hotel", "car", "trip_payment")
#: run a test with per-participant command topics and with the one commands topic
BOTH_COMMAND_TOPICS = pytest.mark.parametrize(
    "command_topics", ["per-participant", "single"], indirect=True
)


def _cluster_url() -> str | None:
    url = os.environ.get("SAGA_REDIS_CLUSTER_URL")
    env = ROOT / ".stack" / "cluster.env"
    if not url and not env.exists():
        subprocess.run(
            [str(ROOT / "scripts" / "stack"), "up", "--redis-cluster"],
            capture_output=True,
            timeout=600,
        )
    if not url and env.exists():
        for line in env.read_text().splitlines():
            if line.startswith("SAGA_REDIS_URL="):
                url = line.split("=", 1)[1].strip()
    return url


@pytest.fixture(scope="session")
def cluster_url() -> str:
    url = _cluster_url()
    if not url:
        _missing(
            "no Redis Cluster: scripts/stack up --redis-cluster did not write .stack/cluster.env"
        )
    assert url
    return url


@pytest.fixture
def redis_mode(request: pytest.FixtureRequest) -> str:
    """ "single" unless the test is parametrized with BOTH_REDIS."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def command_topics(request: pytest.FixtureRequest) -> str | None:
    """The command-topic mode BOTH_COMMAND_TOPICS gives the test; None: the run's (the
    default per-participant, or SAGA_COMMAND_TOPICS)."""
    return getattr(request, "param", None)


@pytest.fixture
def settings(
    infra: Infra, redis_mode: str, command_topics: str | None, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings pointing at the real stack, with this test's own topics and Redis key prefix
    (on the Redis Cluster when `redis_mode` is "cluster")."""
    tag = uuid.uuid4().hex[:10]
    cluster = redis_mode == "cluster"
    mode: dict[str, Any] = {"command_topics": command_topics} if command_topics else {}
    s = Settings(
        kafka_bootstrap_servers=infra.bootstrap,
        redis_url=request.getfixturevalue("cluster_url") if cluster else infra.redis_url,
        redis_cluster=cluster,
        commands_topic=f"t-{tag}-commands",
        events_topic=f"t-{tag}-events",
        dlq_topic=f"t-{tag}-dlq",
        topic_partitions=3,
        key_prefix=f"t{tag}",
        **mode,
    )
    names = [s.commands_topic, s.events_topic, s.dlq_topic]
    marker = request.node.get_closest_marker("participant_topics")
    own = [s.command_topic_of(p) for p in marker.args] if marker else []
    kafka.create_topics(s, list(dict.fromkeys(names + own)), 3)
    yield s
    # thousands of leftover test topics slow every broker restart; with them the participant
    # command topics (`<commands>.<participant>`) an orchestrator in that mode created
    try:
        listed = list(kafka.admin(s).list_topics(timeout=30).topics)
    except Exception:  # a test that broke Kafka: delete what is known
        listed = []
    kafka.delete_topics(s, names + [t for t in listed if t.startswith(f"{s.commands_topic}.")])


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[SagaReader]:
    """Reads this test's sagas (hash, history) back from Redis."""
    from tests.support.orch import SagaReader

    r = SagaReader(settings)
    yield r
    await r.aclose()
