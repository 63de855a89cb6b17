"""`scripts/stack up --secure`: the SASL_SSL Kafka and the TLS Redis with ACL users, for real.

The clients here are configured by hand (redis-py with `ssl_ca_certs`, confluent-kafka with
explicit librdkafka settings), not through the project's factories, so that these tests check the
stack itself. The plaintext stack keeps running; nothing here stops anything, and the secure pair
stays up afterwards, as the plaintext one does (`scripts/stack down` stops all four).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import ROOT

STACK = str(ROOT / "scripts" / "stack")
EXTERNAL = bool(
    (os.environ.get("SAGA_KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    and (os.environ.get("SAGA_REDIS_URL") or os.environ.get("REDIS_URL"))
)
pytestmark = pytest.mark.skipif(
    EXTERNAL, reason="Kafka and Redis come from the environment; the local secure stack is not used"
)

STACK_DIR = Path(os.environ.get("SAGA_STACK_DIR") or ROOT / ".stack")
WORKERS = ("inventory", "payment", "shipping", "notification")
USERS = ("admin", "orchestrator", *WORKERS, "operator")
TOPICS = ("saga-commands", "saga-events", "saga-dlq")


def _env() -> dict[str, str]:
    """The caller's environment without client settings (a sourced secure.env, say)."""
    drop = re.compile(
        r"^(KAFKA_BOOTSTRAP_SERVERS|REDIS_URL|SAGA_KAFKA_(BOOTSTRAP_SERVERS|SECURITY_PROTOCOL"
        r"|SASL_.*|SSL_.*)|SAGA_REDIS_(URL|USERNAME|PASSWORD.*|SSL_.*))$"
    )
    return {k: v for k, v in os.environ.items() if not drop.match(k)}


def _up() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STACK, "up", "--secure"], env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.fixture(scope="module")
def first_up() -> subprocess.CompletedProcess[str]:
    proc = _up()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def secure_env(first_up: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The `export NAME=value` lines of secure.env (values are shell-quoted only when needed)."""
    out = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "-", str(STACK_DIR / "secure.env")],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(kv.split("=", 1) for kv in out.split("\0") if kv.startswith("SAGA_"))


def _redis_port(env: dict[str, str]) -> int:
    return int(env["SAGA_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])


def _password(env: dict[str, str], user: str) -> str:
    return Path(env[f"SAGA_SECURE_REDIS_PASSWORD_FILE_{user.upper()}"]).read_text()


@pytest.fixture
def as_user(secure_env: dict[str, str]) -> Iterator[Any]:
    """Redis clients over TLS (CA-verified, hostname checked), logged in as a user of the ACL."""
    made: list[redis.Redis] = []

    def connect(user: str | None, password: str | None = None, **extra: Any) -> redis.Redis:
        client = redis.Redis(
            host="localhost",
            port=_redis_port(secure_env),
            ssl=True,
            ssl_ca_certs=secure_env["SAGA_REDIS_SSL_CAFILE"],
            ssl_check_hostname=True,
            username=user,
            password=password
            if password is not None or user is None
            else _password(secure_env, user),
            socket_timeout=10,
            retry=Retry(NoBackoff(), 0),  # a refused login is the answer, not worth a retry
            **extra,
        )
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()


def _kafka_conf(env: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": env["SAGA_KAFKA_BOOTSTRAP_SERVERS"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": env["SAGA_KAFKA_SASL_USERNAME"],
        "sasl.password": env["SAGA_KAFKA_SASL_PASSWORD"],
        "ssl.ca.location": env["SAGA_KAFKA_SSL_CAFILE"],
        "ssl.endpoint.identification.algorithm": "https",
        **overrides,
    }


# --- the script ---------------------------------------------------------------------------


def test_up_secure_twice_reuses_everything(first_up: subprocess.CompletedProcess[str]) -> None:
    """A second `up --secure` finds both secure services running and makes no new secret."""
    assert "secure stack up:" in first_up.stdout
    again = _up()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "secure redis: already running" in again.stdout
    assert "secure kafka: already running" in again.stdout
    assert "secure: reusing the CA and the broker, redis and client certificates" in again.stdout
    assert "secure: reusing the 9 passwords" in again.stdout
    assert "made" not in again.stdout and "formatting" not in again.stdout
    assert "secure topics: topic saga-commands: exists" in again.stdout
    assert again.stderr == ""


def test_status_secure_shows_both(first_up: subprocess.CompletedProcess[str]) -> None:
    """`status --secure` has one line each for the secure Kafka and Redis, and exits 0."""
    proc = subprocess.run(
        [STACK, "status", "--secure"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(
        r"secure kafka: up on localhost:\d+, SASL_SSL SCRAM-SHA-512 .*saga-dlq=\d+", proc.stdout
    )
    assert re.search(
        r"secure redis: up on rediss://localhost:\d+, TLS only, 7 ACL users, default user off",
        proc.stdout,
    )
    assert "appendonly yes, maxmemory-policy noeviction" in proc.stdout.split("secure redis:")[1]


def test_secure_env_has_every_setting(secure_env: dict[str, str]) -> None:
    """secure.env exports the client settings, secrets only in files a user alone can read."""
    assert re.fullmatch(r"localhost:\d+", secure_env["SAGA_KAFKA_BOOTSTRAP_SERVERS"])
    assert secure_env["SAGA_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert secure_env["SAGA_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert secure_env["SAGA_KAFKA_SASL_USERNAME"] == "saga"
    assert len(secure_env["SAGA_KAFKA_SASL_PASSWORD"]) >= 32
    assert re.fullmatch(r"rediss://localhost:\d+/0", secure_env["SAGA_REDIS_URL"])
    assert secure_env["SAGA_REDIS_USERNAME"] == "orchestrator"
    assert (
        secure_env["SAGA_REDIS_PASSWORD_FILE"]
        == secure_env["SAGA_SECURE_REDIS_PASSWORD_FILE_ORCHESTRATOR"]
    )
    files = [
        secure_env["SAGA_KAFKA_SSL_CAFILE"],
        secure_env["SAGA_REDIS_SSL_CAFILE"],
        secure_env["SAGA_SECURE_CLIENT_CERTFILE"],
        *(secure_env[f"SAGA_SECURE_REDIS_PASSWORD_FILE_{u.upper()}"] for u in USERS),
    ]
    for name in files:
        assert Path(name).is_absolute() and Path(name).is_file(), name
    secrets = [
        STACK_DIR / "secure.env",
        Path(secure_env["SAGA_SECURE_CLIENT_KEYFILE"]),
        *(Path(secure_env[f"SAGA_SECURE_REDIS_PASSWORD_FILE_{u.upper()}"]) for u in USERS),
    ]
    for path in secrets:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


def test_acl_template_holds_no_secret(secure_env: dict[str, str]) -> None:
    """deploy/redis-acl.conf has placeholders only; no real password or hash is committed."""
    text = (ROOT / "deploy" / "redis-acl.conf").read_text()
    assert not re.search(r"[#>][0-9a-f]{16,}", text)
    for user in USERS:
        assert _password(secure_env, user) not in text
        assert f"#@SHA256_{user.upper()}@" in text


# --- the TLS Redis ------------------------------------------------------------------------


def test_redis_refuses_a_plaintext_connection(secure_env: dict[str, str]) -> None:
    """The TLS port does not speak plain Redis: a redis:// client gets no PONG."""
    client = redis.Redis(
        host="127.0.0.1",
        port=_redis_port(secure_env),
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_redis_refuses_the_default_user(as_user: Any) -> None:
    """Without a login nothing runs (NOAUTH); the default user cannot log in."""
    with pytest.raises(redis.AuthenticationError):
        as_user(None).ping()
    with pytest.raises(redis.AuthenticationError):
        as_user("default", "anything").ping()


def test_each_acl_user_logs_in_over_tls_with_its_own_password(
    as_user: Any, secure_env: dict[str, str]
) -> None:
    """Every user of the ACL logs in over TLS with its password, and not with another's."""
    for user in USERS:
        client = as_user(user)
        if user in WORKERS:  # a worker has no PING: it reads one of its own keys instead
            assert client.get(f"saga:participant:{user}:probe-{uuid.uuid4().hex}") is None
        else:
            assert client.ping()
    with pytest.raises(redis.AuthenticationError):
        as_user("orchestrator", _password(secure_env, "operator")).ping()


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("CONFIG", "GET", "maxmemory"),
        ("KEYS", "*"),
        ("ACL", "LIST"),
        ("FLUSHDB",),
        ("SCAN", "0"),
        ("CLIENT", "KILL", "ID", "999999999"),
        ("SCRIPT", "FLUSH"),
        ("SHUTDOWN", "ABORT"),
    ],
)
def test_orchestrator_gets_noperm_for_dangerous_commands(
    as_user: Any, command: tuple[str, ...]
) -> None:
    """The orchestrator's user may not flush, reconfigure, list or scan keys, read ACLs, kill
    clients, drop scripts or shut the server down."""
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user("orchestrator").execute_command(*command)


def test_orchestrator_keys_stay_under_the_prefix(as_user: Any) -> None:
    """The orchestrator reads and writes `saga:*` keys only."""
    client = as_user("orchestrator")
    assert client.hget(f"saga:probe-{uuid.uuid4().hex}", "state") is None
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.hget("other:key", "state")


@pytest.mark.parametrize("worker", WORKERS)
def test_a_worker_gets_noperm_on_another_workers_keys(as_user: Any, worker: str) -> None:
    """A worker touches its own keys only, not another participant's nor the sagas."""
    client = as_user(worker)
    other = WORKERS[(WORKERS.index(worker) + 1) % len(WORKERS)]
    assert client.hgetall(f"saga:participant:{worker}:faults") is not None
    for key in (f"saga:participant:{other}:faults", f"saga:{other}:ledger", "saga:_outbox"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.hgetall(key)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command("FLUSHALL")


def test_operator_reads_everything_and_writes_only_stock_and_faults(as_user: Any) -> None:
    """The operator reads any saga key and writes only the stock and the faults hashes."""
    client = as_user("operator")
    assert client.hgetall(f"saga:probe-{uuid.uuid4().hex}") == {}
    assert client.hgetall("saga:participant:inventory:faults") is not None
    faults = f"saga:participant:probe-{uuid.uuid4().hex[:8]}:faults"
    assert client.hset(faults, "fail_next", 0) == 1
    assert client.delete(faults) == 1
    # the stock is real sample data: ask the server without running the command
    dry = as_user("admin").execute_command(
        "ACL", "DRYRUN", "operator", "HSET", "saga:inventory:stock", "sku-1", "5"
    )
    assert dry == b"OK", dry
    for key in (f"saga:probe-{uuid.uuid4().hex}", "saga:inventory:reserved"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.hset(key, "state", "completed")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.delete("saga:_outbox")


def test_redis_accepts_a_client_certificate(as_user: Any, secure_env: dict[str, str]) -> None:
    """mTLS: a client certificate from the stack's CA is accepted (the login is still needed)."""
    client = as_user(
        "orchestrator",
        ssl_certfile=secure_env["SAGA_SECURE_CLIENT_CERTFILE"],
        ssl_keyfile=secure_env["SAGA_SECURE_CLIENT_KEYFILE"],
    )
    assert client.ping()


# --- the SASL_SSL Kafka -------------------------------------------------------------------


def test_kafka_accepts_saga_over_sasl_ssl(secure_env: dict[str, str]) -> None:
    """`saga` logs in with SCRAM-SHA-512 over TLS (hostname verified), sees the saga topics,
    creates a topic and produces to it."""
    admin = AdminClient(_kafka_conf(secure_env))
    topics = admin.list_topics(timeout=30).topics
    for name in TOPICS:
        assert name in topics and len(topics[name].partitions) >= 1
    topic = f"secure-probe-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = Producer(_kafka_conf(secure_env, acks="all"))
        producer.produce(topic, b"over SASL_SSL", key=b"k")
        assert producer.flush(30) == 0
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_kafka_accepts_a_client_certificate(secure_env: dict[str, str]) -> None:
    """mTLS: with the stack's client certificate as well, the SASL login still works."""
    conf = _kafka_conf(
        secure_env,
        **{
            "ssl.certificate.location": secure_env["SAGA_SECURE_CLIENT_CERTFILE"],
            "ssl.key.location": secure_env["SAGA_SECURE_CLIENT_KEYFILE"],
        },
    )
    assert "saga-events" in AdminClient(conf).list_topics(timeout=30).topics


def _kafka_error(conf: dict[str, Any]) -> KafkaError:
    """The first error librdkafka reports for a client that must get no metadata."""
    errors: list[KafkaError] = []
    full: dict[str, Any] = {**conf, "error_cb": errors.append, "log_level": 0}
    admin = AdminClient(full)
    deadline = time.monotonic() + 30
    while not errors and time.monotonic() < deadline:
        admin.poll(0.2)  # error_cb runs from poll
    assert errors, "librdkafka reported no error"
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)
    return errors[0]


def test_kafka_refuses_a_wrong_password(secure_env: dict[str, str]) -> None:
    """A wrong SCRAM password is an authentication error, not a connection."""
    err = _kafka_error(_kafka_conf(secure_env, **{"sasl.password": "wrong-" + uuid.uuid4().hex}))
    assert err.code() == KafkaError._AUTHENTICATION, err
    assert "invalid credentials" in err.str()


def test_kafka_refuses_plaintext(secure_env: dict[str, str]) -> None:
    """A PLAINTEXT client gets no metadata from the SASL_SSL port."""
    _kafka_error({"bootstrap.servers": secure_env["SAGA_KAFKA_BOOTSTRAP_SERVERS"]})


def test_kafka_controller_port_wants_a_certificate(secure_env: dict[str, str]) -> None:
    """The controller listener is TLS with a required client certificate: a TLS client without
    one is refused during the handshake."""
    props = (STACK_DIR / "secure" / "kafka" / "server.properties").read_text()
    voters = re.search(r"^controller\.quorum\.voters=1@[^:]+:(\d+)$", props, re.M)
    assert voters, "no controller.quorum.voters in the secure broker's server.properties"
    ctx = ssl.create_default_context(cafile=secure_env["SAGA_KAFKA_SSL_CAFILE"])
    with (
        socket.create_connection(("localhost", int(voters.group(1))), timeout=10) as raw,
        pytest.raises(ssl.SSLError, match=r"(?i)certificate"),
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"\0\0\0\x05hello")
        tls.recv(1)
