"""docker-compose.yml agrees with the project's defaults: Settings() in schemas/config.py and the
local stack (scripts/stack, deploy/); deploy/Dockerfile builds the wheel pyproject.toml describes
and runs it slim, non-root and health-checked. Parsed only; no Docker needed (the healthcheck's
command runs here against a local HTTP server)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.ops.auth import for_api
from schemas.config import Settings
from tests.conftest import ROOT
from tests.support import dockerfile
from tests.support.dockerfile import Stage

COMPOSE = ROOT / "docker-compose.yml"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
WORKERS = ("inventory", "payment", "shipping", "notification")


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


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    parsed = dockerfile.load()
    assert len(parsed) >= 2, "deploy/Dockerfile should be multi-stage (builder, then runtime)"
    return parsed


def _copies(stage: Stage) -> list[tuple[list[str], list[str]]]:
    """Each COPY of a stage as (options, sources); the destination is left out."""
    result = []
    for args in stage.args_of("COPY"):
        words = args.split()
        options = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        result.append((options, paths[:-1]))
    return result


def _pip_installs(stage: Stage) -> list[list[str]]:
    """The positional arguments of each `pip install` in the stage's RUNs."""
    installs = []
    for words in dockerfile.run_words(stage):
        if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
            rest = words[words.index("install") + 1 :]
            installs.append([w for w in rest if not w.startswith("-")])
    return installs


def test_the_builder_stage_builds_the_wheel_from_what_pyproject_packages(
    stages: list[Stage],
) -> None:
    """The builder copies every top-level package pyproject.toml installs (one left out builds
    an image whose `saga` cannot import), pyproject.toml, the readme and the licence files, and
    makes the wheel with `python -m build --wheel`."""
    builder = stages[0]
    assert builder.name == "builder"
    include = PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    assert packages == {"orchestrator", "participants", "schemas", "infra"}
    needed = packages | {"pyproject.toml", PROJECT["project"]["readme"]["file"]}
    needed |= set(PROJECT["project"]["license-files"])
    copied = {src.rstrip("/") for options, sources in _copies(builder) for src in sources}
    assert not any(options for options, _ in _copies(builder))
    assert needed <= copied, needed - copied
    for path in needed:
        assert (ROOT / path).exists(), path
    builds = [w for w in dockerfile.run_words(builder) if w[:3] == ["python", "-m", "build"]]
    assert len(builds) == 1 and "--wheel" in builds[0], builds
    outdir = builds[0][builds[0].index("--outdir") + 1]
    # the runtime stage takes the wheel from that directory
    runtime_sources = [src for _, sources in _copies(stages[-1]) for src in sources]
    assert runtime_sources == [f"{outdir}/*.whl"]


def test_the_runtime_stage_installs_only_the_wheel(stages: list[Stage]) -> None:
    """The runtime image gets nothing from the build context: one COPY, of the wheel, from the
    builder, and one `pip install` of that wheel (its dependencies come from the index)."""
    runtime = stages[-1]
    copies = _copies(runtime)
    assert copies == [(["--from=builder"], copies[0][1])], copies
    installs = _pip_installs(runtime)
    assert len(installs) == 1, installs
    assert installs[0] and all(arg.endswith(".whl") for arg in installs[0]), installs
    assert all(arg.startswith("/tmp/wheels/") for arg in installs[0])
    assert "build" not in {arg.split(">")[0] for args in installs for arg in args}


def test_the_image_is_slim_and_meets_requires_python(stages: list[Stage]) -> None:
    """Both stages use the same slim Python image, one that requires-python accepts."""
    bases = {stage.base for stage in stages}
    assert len(bases) == 1, bases
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim", bases.pop())
    assert match, "the base image should be python:X.Y-slim"
    wanted = re.fullmatch(r">=(\d+)\.(\d+)", PROJECT["project"]["requires-python"])
    assert wanted
    have = (int(match.group(1)), int(match.group(2)))
    assert have >= (int(wanted.group(1)), int(wanted.group(2)))
    assert (
        f"Programming Language :: Python :: {have[0]}.{have[1]}"
        in (PROJECT["project"]["classifiers"])
    )


def test_the_image_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    """The runtime stage ends as a numeric, non-zero uid and gid (Kubernetes' runAsNonRoot
    checks a number), created in the image."""
    runtime = stages[-1]
    users = runtime.args_of("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert gid.isdigit() and int(gid) != 0, users[-1]
    made = [w for w in dockerfile.run_words(runtime) if w[:1] == ["useradd"]]
    assert made and made[0][made[0].index("--uid") + 1] == uid
    groups = [w for w in dockerfile.run_words(runtime) if w[:1] == ["groupadd"]]
    assert groups and groups[0][groups[0].index("--gid") + 1] == gid
    # nothing after USER switches back
    last_user = max(i for i, ins in enumerate(runtime.instructions) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in runtime.instructions[last_user:])


def test_the_entrypoint_is_the_saga_command(stages: list[Stage], services: dict[str, Any]) -> None:
    """`saga` (pyproject's script) is the entry point and the orchestrator the default command;
    compose's commands are `saga` sub-commands."""
    runtime = stages[-1]
    assert "saga" in PROJECT["project"]["scripts"]
    assert dockerfile.exec_form(runtime.args_of("ENTRYPOINT")[-1]) == ["saga"]
    assert dockerfile.exec_form(runtime.args_of("CMD")[-1]) == services["orchestrator"]["command"]


def test_the_healthcheck_asks_livez_on_the_http_port(
    stages: list[Stage], services: dict[str, Any]
) -> None:
    """HEALTHCHECK runs Python's urllib (the slim image has no curl) against /livez on the
    port the image sets, the one it exposes and compose publishes."""
    runtime = stages[-1]
    command = dockerfile.healthcheck_command(runtime)
    assert command[:2] == ["python", "-c"] and len(command) == 3
    assert "urllib.request" in command[2] and "/livez" in command[2]
    options = dockerfile.healthcheck_options(runtime)
    assert {"interval", "timeout", "retries"} <= set(options)
    port = dockerfile.env(runtime)["SAGA_HTTP_PORT"]
    assert runtime.args_of("EXPOSE") == [port]
    orch = services["orchestrator"]
    assert orch["environment"]["SAGA_HTTP_PORT"] == port
    assert _host_port(orch, int(port)) == ("127.0.0.1", int(port))


class _Livez(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/livez" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def livez_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Livez)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=30)


def _healthcheck(stages: list[Stage], port: int) -> int:
    command = dockerfile.healthcheck_command(stages[-1])
    env = {"SAGA_HTTP_PORT": str(port), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=60)
    return proc.returncode


def test_the_healthcheck_command_passes_and_fails(
    stages: list[Stage], livez_server: ThreadingHTTPServer
) -> None:
    """The healthcheck's own command, run here: exit 0 when /livez answers 200; non-zero when
    it answers 503, and when nothing listens (a check that always passes checks nothing)."""
    port = int(livez_server.server_address[1])
    assert _healthcheck(stages, port) == 0
    _Livez.status = 503
    try:
        assert _healthcheck(stages, port) != 0
    finally:
        _Livez.status = 200
    livez_server.shutdown()
    livez_server.server_close()
    assert _healthcheck(stages, port) != 0


def test_the_stack_runs_the_orchestrator_and_workers_from_the_image(
    services: dict[str, Any],
) -> None:
    """The orchestrator's service builds deploy/Dockerfile and keeps its healthcheck; the four
    workers run the same image, have no /livez (so no healthcheck), and wait for a healthy
    orchestrator."""
    orch = services["orchestrator"]
    assert orch["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert (ROOT / orch["build"]["dockerfile"]).is_file()
    assert "healthcheck" not in orch  # the image's /livez check applies
    for name in WORKERS:
        worker = services[name]
        assert worker["image"] == orch["image"], name
        assert "build" not in worker, name
        assert worker["healthcheck"] == {"disable": True}, name
        assert worker["depends_on"] == {"orchestrator": {"condition": "service_healthy"}}, name
        assert worker["command"][:2] == ["participant", "run"], name


def test_the_build_context_leaves_out_local_state() -> None:
    """.dockerignore keeps the virtualenv, the local stack's data and git out of the context."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".stack", "*.egg-info", "build", "dist"} <= ignored
