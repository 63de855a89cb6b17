"""The order saga, the CLI and DLQ replay over SASL_SSL Kafka and TLS Redis with ACL users, as
`scripts/stack up --secure` + `source .stack/secure.env` give them: real processes, each worker
logged in as its own least-privilege Redis user. Secrets never reach a log or the doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra import kafka
from schemas.config import Settings
from tests.conftest import ROOT

EXTERNAL = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"))
pytestmark = pytest.mark.skipif(EXTERNAL, reason="Kafka and Redis come from the environment")
WORKERS = ("inventory", "payment", "shipping", "notification")


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines of secure.env."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            out[name] = value
    return out


@pytest.fixture(scope="module")
def secure() -> dict[str, str]:
    """The secure stack is up (idempotent) and its settings, as a person would source them."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "stack"), "up", "--secure"],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return read_env_file(ROOT / ".stack" / "secure.env")


def secrets_of(env: dict[str, str]) -> list[str]:
    """Every password the secure stack handed out (the Kafka one and each Redis user's)."""
    files = [v for k, v in env.items() if "PASSWORD_FILE" in k]
    return [env["SAGA_KAFKA_SASL_PASSWORD"], *(Path(f).read_text().strip() for f in files)]


def settings_of(env: dict[str, str]) -> Settings:
    values = {k.removeprefix("SAGA_").lower(): v for k, v in env.items() if k.startswith("SAGA_")}
    known: dict[str, Any] = {k: v for k, v in values.items() if k in Settings.model_fields}
    return Settings(**known)


@pytest.fixture
def topics(secure: dict[str, str]) -> Iterator[dict[str, str]]:
    """This test's own topics on the secure broker, made through the project's factory (so the
    admin client logs in over SASL_SSL too); deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "SAGA_COMMANDS_TOPIC": f"s-{tag}-commands",
        "SAGA_EVENTS_TOPIC": f"s-{tag}-events",
        "SAGA_DLQ_TOPIC": f"s-{tag}-dlq",
        "SAGA_TOPIC_PARTITIONS": "2",  # as created below: the orchestrator checks it
    }
    s = settings_of(secure)
    names = list(env.values())
    kafka.create_topics(s, names, 2)
    yield env
    kafka.delete_topics(s, names)


def saga(
    env: dict[str, str], *args: str, timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
    )  # fmt: skip


def as_user(env: dict[str, str], user: str) -> dict[str, str]:
    """The same settings, logged in to Redis as another ACL user."""
    return {
        **env,
        "SAGA_REDIS_USERNAME": user,
        "SAGA_REDIS_PASSWORD_FILE": env[f"SAGA_SECURE_REDIS_PASSWORD_FILE_{user.upper()}"],
    }


def wait_status(env: dict[str, str], saga_id: str, want: str, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    doc: Any = None
    while time.monotonic() < deadline:
        out = saga(env, "status", saga_id, "--json")
        if out.returncode == 0:
            doc = json.loads(out.stdout)
            if doc["state"] == want:
                return doc
        time.sleep(0.5)  # polling the CLI, bounded by the deadline
    raise AssertionError(f"{saga_id} did not become {want}: {doc}")


def test_order_saga_cli_and_dlq_replay_over_the_secure_stack(
    secure: dict[str, str], topics: dict[str, str], tmp_path: Path
) -> None:
    """doctor passes; an order started with the CLI completes; a poison StartOrder is
    dead-lettered and, fixed, replayed to completion; no secret appears in any output."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env = {**base, **secure, **topics, "PYTHONPATH": str(ROOT), "SAGA_LOG_LEVEL": "INFO"}
    logs: list[Path] = []
    procs = []

    def start(name: str, penv: dict[str, str], *args: str) -> None:
        log = tmp_path / f"{name}.log"
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "orchestrator.ops.cli", *args],
            env=penv, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
        ))  # fmt: skip

    outputs: list[str] = []
    try:
        doctor = saga(env, "doctor")
        outputs.append(doctor.stdout + doctor.stderr)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        start("orchestrator", env, "orchestrator", "run")
        for name in WORKERS:
            start(name, as_user(env, name), "participant", "run", name)
        sku = f"sku-{uuid.uuid4().hex[:6]}"
        stock = saga(as_user(env, "operator"), "inventory", "set-stock", sku, "5")
        assert stock.returncode == 0, stock.stderr
        started = saga(env, "start-order", "--item", f"{sku}:1", "--customer", "c1",
                       "--amount", "12.50", "--json")  # fmt: skip
        outputs.append(started.stdout + started.stderr)
        assert started.returncode == 0, started.stderr
        order_id = json.loads(started.stdout)["sagaId"]
        assert wait_status(env, order_id, "completed")["state"] == "completed"

        poison_id = f"dlq-{uuid.uuid4().hex[:6]}"
        order = {"sagaId": poison_id, "command": "StartOrder", "customerId": "c1",
                 "items": [{"productId": sku, "quantity": 1}], "amount": "3.00"}  # fmt: skip
        broken = {**order, "items": []}  # an order with no items is invalid: poison
        _produce(settings_of(env), topics["SAGA_COMMANDS_TOPIC"], poison_id, broken)
        letters = _wait_letters(env, poison_id)
        position = letters[0]["position"]
        fixed = tmp_path / "fixed.json"
        fixed.write_bytes(orjson.dumps(order))
        replay = saga(env, "dlq", "replay", position, "--value-file", str(fixed))
        outputs.append(replay.stdout + replay.stderr)
        assert replay.returncode == 0, replay.stderr
        assert wait_status(env, poison_id, "completed")["state"] == "completed"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    text = "\n".join(outputs) + "\n".join(log.read_text(errors="replace") for log in logs)
    assert "orchestrator started" in text
    for secret in secrets_of(secure):
        assert secret not in text, "a secret reached a log or the CLI's output"


def _produce(s: Settings, topic: str, key: str, doc: dict[str, Any]) -> None:
    producer = kafka.sync_producer(s)
    producer.produce(topic, key=key.encode(), value=orjson.dumps(doc))
    assert producer.flush(30) == 0


def _wait_letters(env: dict[str, str], saga_id: str, timeout_s: float = 90) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = saga(env, "dlq", "list", "--saga", saga_id, "--json")
        if out.returncode == 0 and (letters := json.loads(out.stdout)):
            return list(letters)
        time.sleep(0.5)  # polling the dead-letter topic, bounded by the deadline
    raise AssertionError(f"no dead letter for {saga_id}")


def doctor_line(env: dict[str, str], component: str) -> tuple[int, str]:
    out = saga(env, "doctor", timeout_s=120)
    lines = [ln for ln in out.stdout.splitlines() if ln.split(" ", 1)[-1].startswith(component)]
    assert lines, out.stdout + out.stderr
    return out.returncode, lines[0]


@pytest.mark.parametrize(
    ("change", "component", "expected"),
    [
        ({"SAGA_KAFKA_SASL_PASSWORD": "wrong-password-1"}, "kafka:", "wrong username or password"),
        ({"SAGA_KAFKA_SASL_MECHANISM": "PLAIN"}, "kafka:", "does not offer SASL mechanism PLAIN"),
        ({"SAGA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "kafka:", "expects TLS or SASL"),
        ({"SAGA_KAFKA_SSL_CAFILE": "@other-ca"}, "kafka:", "not signed by a CA we trust"),
        ({"SAGA_REDIS_PASSWORD_FILE": "@wrong"}, "redis:", "WRONGPASS"),
        ({"SAGA_REDIS_SSL_CAFILE": "@other-ca"}, "redis:", "TLS verification of Redis"),
        ({"SAGA_REDIS_URL": "redis://localhost:@redis-port/0"}, "redis:", "TLS port"),
    ],
    ids=[
        "wrong-password",
        "mechanism",
        "plaintext-on-tls",
        "kafka-ca",
        "redis-wrongpass",
        "redis-ca",
        "redis-plain-on-tls",
    ],
)
def test_doctor_names_each_security_failure_in_one_line(
    secure: dict[str, str], tmp_path: Path, change: dict[str, str], component: str, expected: str
) -> None:
    """`saga doctor` exits non-zero with one plain line for each way the login can fail, and
    never prints the password."""
    other_ca = _self_signed_ca(tmp_path)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    port = secure["SAGA_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    subst = {"@other-ca": str(other_ca), "@wrong": str(wrong), "@redis-port": port}
    for k, v in change.items():
        for marker, real in subst.items():
            v = v.replace(marker, real)
        change = {**change, k: v}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env = {**base, **secure, "SAGA_CONNECT_TIMEOUT_S": "5", "PYTHONPATH": str(ROOT), **change}
    rc, line = doctor_line(env, component)
    assert rc != 0 and line.startswith("FAIL"), line
    assert expected in line, line
    for secret in secrets_of(secure):
        assert secret not in line


def _self_signed_ca(tmp_path: Path) -> Path:
    """A CA that signed nothing of ours."""
    key, cert = tmp_path / "other.key", tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=not-our-ca", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert


def test_a_client_certificate_is_presented_when_configured(secure: dict[str, str]) -> None:
    """mTLS settings load and work: with the stack's client certificate and key given to both
    Kafka and Redis, the doctor still logs in everywhere."""
    cert, key = secure["SAGA_SECURE_CLIENT_CERTFILE"], secure["SAGA_SECURE_CLIENT_KEYFILE"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env = {
        **base,
        **secure,
        "PYTHONPATH": str(ROOT),
        "SAGA_KAFKA_SSL_CERTFILE": cert,
        "SAGA_KAFKA_SSL_KEYFILE": key,
        "SAGA_REDIS_SSL_CERTFILE": cert,
        "SAGA_REDIS_SSL_KEYFILE": key,
    }
    out = saga(env, "doctor", timeout_s=120)
    assert out.returncode == 0, out.stdout + out.stderr
