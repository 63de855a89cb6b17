"""docker-compose.yml agrees with the project's defaults: Settings() in schemas/config.py and the
local stack (scripts/stack, deploy/). Parsed only; no Docker needed."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.ops.auth import for_api
from schemas.config import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def _stack_default(var: str) -> str:
    """The default of `${VAR:-default}` in scripts/stack."""
    text = (ROOT / "scripts" / "stack").read_text()
    match = re.search(r"\$\{" + var + r":-([^}]*)\}", text)
    assert match, f"{var} has no default in scripts/stack"
    return match.group(1)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svc = compose["services"]
    assert set(svc) >= {"kafka", "redis", "topics"}
    return dict(svc)


def _host_port(service: dict[str, Any], container_port: int) -> tuple[str, int]:
    for mapping in service["ports"]:
        parts = str(mapping).split(":")
        if int(parts[-1]) == container_port:
            host = parts[0] if len(parts) == 3 else "0.0.0.0"
            return host, int(parts[-2])
    raise AssertionError(f"container port {container_port} is not published")


def test_kafka_port_matches_settings_and_stack(services: dict[str, Any]) -> None:
    host, port = _default("kafka_bootstrap_servers").rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) == int(_stack_default("SAGA_KAFKA_PORT"))
    assert _host_port(services["kafka"], int(port)) == (host, int(port))
    env = services["kafka"]["environment"]
    assert f"://{host}:{port}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_kafka_is_single_node_kraft(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert str(env["KAFKA_CONTROLLER_QUORUM_VOTERS"]).startswith(f"{env['KAFKA_NODE_ID']}@")
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert int(env[key]) == 1
    assert int(env["KAFKA_NUM_PARTITIONS"]) == _default("topic_partitions")
    # a Kafka cluster id is a Uuid: 16 bytes in url-safe base64 without padding
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    # the same broker settings as the local stack's template
    props = (ROOT / "deploy" / "server.properties").read_text()
    for key in ("group.initial.rebalance.delay.ms", "log.cleaner.dedupe.buffer.size"):
        value = re.search(rf"^{re.escape(key)}=(.*)$", props, re.M)
        assert value, key
        assert str(env["KAFKA_" + key.upper().replace(".", "_")]) == value.group(1)


def test_topics_service_creates_the_saga_topics(services: dict[str, Any]) -> None:
    topics = services["topics"]
    assert topics["image"] == services["kafka"]["image"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = "\n".join(topics["command"])
    assert "/opt/kafka/bin/kafka-topics.sh" in script and "--if-not-exists" in script
    names = {_default("commands_topic"), _default("events_topic"), _default("dlq_topic")}
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop
    assert set(loop.group(1).split()) == names
    assert names == {"saga-commands", "saga-events", "saga-dlq"}
    partitions = re.findall(r"--partitions (\d+)", script)
    expected = _default("topic_partitions")
    assert expected == int(_stack_default("SAGA_TOPIC_PARTITIONS")) == 6
    assert partitions == [str(expected)]


def test_redis_port_persistence_and_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    assert str(redis["image"]).split(":")[0] == "redis"
    assert str(redis["image"]).split(":")[1].startswith("7")
    url = re.fullmatch(r"redis://([\d.]+):(\d+)/0", _default("redis_url"))
    assert url
    port = int(url.group(2))
    assert port == int(_stack_default("SAGA_REDIS_PORT"))
    assert _host_port(redis, port) == (url.group(1), port)
    cmd = [str(c) for c in redis["command"]]
    opts = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert cmd[0] == "redis-server"
    assert opts == {
        "--appendonly": "yes",
        "--appendfsync": "everysec",
        "--maxmemory-policy": "noeviction",
    }
    # the local stack's Redis has the same three settings
    conf = (ROOT / "deploy" / "redis.conf").read_text()
    for key, value in opts.items():
        assert re.search(rf"^{key[2:]} {value}$", conf, re.M), key
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]


def test_orchestrator_and_workers_use_the_compose_kafka_and_redis(services: dict[str, Any]) -> None:
    """The orchestrator and the four workers are in the file and point at its Kafka and Redis."""
    for name in ("orchestrator", "inventory", "payment", "shipping", "notification"):
        env = services[name]["environment"]
        assert env["SAGA_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092", name
        assert env["SAGA_REDIS_URL"] == "redis://redis:6379/0", name
    assert services["orchestrator"]["command"] == ["orchestrator", "run"]
    workers = {
        services[n]["command"][-1] for n in ("inventory", "payment", "shipping", "notification")
    }
    assert workers == {"inventory", "payment", "shipping", "notification"}


def test_topics_accept_the_records_the_orchestrator_dead_letters(services: dict[str, Any]) -> None:
    """Topics take records up to 16 MiB, like scripts/stack's, so oversized values reach the
    orchestrator's own size cap and the dead-letter topic can hold them."""
    script = "\n".join(services["topics"]["command"])
    assert "max.message.bytes=16777216" in script
    assert "16 * 1_048_576" in (ROOT / "infra" / "kafka.py").read_text()


def test_the_api_listens_beyond_loopback_only_with_tokens(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """In the container the API binds 0.0.0.0, which needs tokens: compose mounts the (public,
    dev-only) tokens file as a secret, and that file parses with both roles."""
    orch = services["orchestrator"]
    env = orch["environment"]
    assert env["SAGA_HTTP_HOST"] == "0.0.0.0"
    assert env["SAGA_HTTP_TOKENS_FILE"] == "/run/secrets/http-tokens"
    assert "http-tokens" in orch["secrets"]
    path = ROOT / compose["secrets"]["http-tokens"]["file"]
    tokens = for_api(str(path), "0.0.0.0")
    roles = {tokens.identify(f"Bearer {line.split()[2]}").role for line in _token_lines(path)}
    assert len(tokens) == 2 and roles == {"read", "operate"}


def _token_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_the_image_gets_every_package_the_project_installs() -> None:
    """deploy/Dockerfile copies each top-level package pyproject.toml installs (a package left
    out builds an image whose `saga` cannot import)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert include is not None
    packages = {p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages and packages <= copied, packages - copied
