"""`saga doctor` against the real stack and against broken addresses, in plain words."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from orchestrator.ops.doctor import (
    explain_kafka_error,
    parse_bootstrap,
    redact_url,
    run_doctor,
)
from schemas.config import Settings
from tests.conftest import ROOT, Infra
from tests.support.procs import stop

SAGA = str(ROOT / ".venv" / "bin" / "saga")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rows_by_name(rows: list[tuple[str, bool, str]]) -> dict[str, tuple[bool, str]]:
    return {name: (ok, text) for name, ok, text in rows}


def redis_config_is_ideal(url: str) -> bool:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        aof = client.config_get("appendonly").get("appendonly")
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        return bool(aof == "yes" and policy == "noeviction")
    finally:
        client.close()


def test_ok_against_the_real_stack(settings: Settings, infra: Infra) -> None:
    rows = rows_by_name(run_doctor(settings))
    assert rows["kafka"][0], rows["kafka"][1]
    assert "answers" in rows["kafka"][1]
    ok, text = rows["kafka topics"]
    assert ok, text
    for topic in (settings.commands_topic, settings.events_topic, settings.dlq_topic):
        assert f"{topic} (3 partitions)" in text
    assert rows["redis"][0] and "answers PING" in rows["redis"][1]
    ok, text = rows["redis config"]
    assert "appendonly" in text and "maxmemory-policy" in text
    assert ok == redis_config_is_ideal(infra.redis_url), text


def test_missing_topics_are_named(settings: Settings) -> None:
    s = settings.model_copy(update={"dlq_topic": "no-such-topic-for-doctor"})
    ok, text = rows_by_name(run_doctor(s))["kafka topics"]
    assert not ok
    assert "missing: no-such-topic-for-doctor" in text


def test_connection_refused() -> None:
    kport, rport = free_port(), free_port()
    s = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{kport}",
        redis_url=f"redis://127.0.0.1:{rport}/0",
        connect_timeout_s=2,
    )
    started = time.monotonic()
    rows = rows_by_name(run_doctor(s))
    assert time.monotonic() - started < 10
    assert set(rows) == {"kafka", "redis"}
    for name, port in (("kafka", kport), ("redis", rport)):
        ok, text = rows[name]
        assert not ok
        assert f"connection refused at 127.0.0.1:{port}" in text
        assert "scripts/stack up" in text


def test_bad_hostname() -> None:
    s = Settings(
        kafka_bootstrap_servers="no-such-host.invalid:9092",
        redis_url="redis://no-such-host.invalid:6379/0",
        connect_timeout_s=2,
    )
    rows = rows_by_name(run_doctor(s))
    for name in ("kafka", "redis"):
        ok, text = rows[name]
        assert not ok
        assert "cannot resolve host name 'no-such-host.invalid'" in text


def test_silent_listener_times_out() -> None:
    """Something accepts TCP connections but never speaks: a timeout, said as such."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(8)
        port = squatter.getsockname()[1]
        s = Settings(
            kafka_bootstrap_servers=f"127.0.0.1:{port}",
            redis_url=f"redis://127.0.0.1:{port}/0",
            connect_timeout_s=1,
        )
        rows = rows_by_name(run_doctor(s))
    assert not rows["kafka"][0]
    assert "gave no Kafka metadata within 1 s" in rows["kafka"][1]
    assert not rows["redis"][0]
    assert "no answer from" in rows["redis"][1] and "within 1 s" in rows["redis"][1]


def test_invalid_addresses_never_raise() -> None:
    s = Settings(kafka_bootstrap_servers="::::", redis_url="http://not-redis", connect_timeout_s=1)
    rows = rows_by_name(run_doctor(s))
    assert not rows["kafka"][0] and "not valid" in rows["kafka"][1]
    assert not rows["redis"][0]


@contextlib.contextmanager
def throwaway_redis(tmp_path: Path, *args: str, password: str | None = None) -> Iterator[int]:
    """A redis-server with `args` on a free port, stopped by pid on leaving."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (scripts/stack up installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        stop(proc)


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    """A throwaway redis-server with requirepass and AOF off."""
    with throwaway_redis(
        tmp_path,
        *("--requirepass", "s3cret", "--save", "", "--appendonly", "no"),
        # an ACL user who may log in and do nothing else (for the NOPERM case)
        *("--user", "mute", "on", ">mute-pass-1", "~*", "-@all"),
        password="s3cret",
    ) as port:
        yield port


def test_rdb_snapshots_beside_aof_are_a_note_not_a_failure(tmp_path: Path) -> None:
    """AOF on and `save` set: healthy, with a note saying what the snapshots cost; with
    `save ""` (deploy/redis.conf) no note."""
    base = Settings(kafka_bootstrap_servers="127.0.0.1:1", connect_timeout_s=2)
    for save, noted in (("60 1", True), ("", False)):
        with throwaway_redis(tmp_path, "--appendonly", "yes", "--save", save) as port:
            url = f"redis://127.0.0.1:{port}/0"
            rows = rows_by_name(run_doctor(base.model_copy(update={"redis_url": url})))
        ok, text = rows["redis config"]
        assert ok, text
        assert text.startswith("appendonly yes, maxmemory-policy noeviction")
        assert ("RDB snapshots are on" in text and "save 60 1" in text) is noted, text


def test_redis_password_required(redis_with_password: int) -> None:
    port = redis_with_password
    base = Settings(kafka_bootstrap_servers="127.0.0.1:1", connect_timeout_s=2)

    ok, text = rows_by_name(
        run_doctor(base.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"}))
    )["redis"]
    assert not ok
    assert "requires a login (NOAUTH)" in text

    wrong = f"redis://:wrong@127.0.0.1:{port}/0"
    ok, text = rows_by_name(run_doctor(base.model_copy(update={"redis_url": wrong})))["redis"]
    assert not ok
    assert "rejected the user name or password (WRONGPASS)" in text
    assert "wrong" not in text.replace("WRONGPASS", ""), "the password is never printed"

    right = f"redis://:s3cret@127.0.0.1:{port}/0"
    rows = rows_by_name(run_doctor(base.model_copy(update={"redis_url": right})))
    assert rows["redis"][0], rows["redis"][1]
    assert "s3cret" not in rows["redis"][1] and ":***@" in rows["redis"][1]
    # this throwaway server has AOF off: the doctor says why that matters
    ok, text = rows["redis config"]
    assert not ok and "appendonly no" in text and "lost on a crash" in text


def test_redis_acl_user_wrong_password_and_no_permission(redis_with_password: int) -> None:
    """ACL logins: a wrong password is WRONGPASS in one line naming the settings, a user without
    permission for PING is NOPERM; neither line shows the password."""
    base = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        connect_timeout_s=2,
        redis_url=f"redis://127.0.0.1:{redis_with_password}/0",
        redis_username="mute",
    )
    ok, text = rows_by_name(
        run_doctor(base.model_copy(update={"redis_password": SecretStr("nope-9")}))
    )["redis"]
    assert not ok and "WRONGPASS" in text and "SAGA_REDIS_PASSWORD" in text and "nope-9" not in text
    ok, text = rows_by_name(
        run_doctor(base.model_copy(update={"redis_password": SecretStr("mute-pass-1")}))
    )["redis"]
    assert not ok and "NOPERM" in text and "redis-acl.conf" in text and "mute-pass-1" not in text


@pytest.mark.parametrize(
    ("librdkafka_says", "expected"),
    [
        ("SASL authentication error: Authentication failed (after 3ms)", "rejected the SASL login"),
        (
            "SASL authentication error: Authentication failed during authentication due to "
            "invalid credentials with SASL mechanism SCRAM-SHA-512",
            "wrong username or password",
        ),
        (
            "SASL handshake failed (start (-4)): SASL mechanism PLAIN not supported by broker "
            "(enabled mechanisms: SCRAM-SHA-512)",
            "does not offer SASL mechanism",
        ),
        (
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: "
            "broker certificate could not be verified",
            "not signed by a CA we trust",
        ),
        (
            "SSL handshake failed: certificate verify failed: Hostname mismatch",
            "name does not match",
        ),
        (
            "Disconnected while requesting ApiVersion: might be caused by incorrect "
            "security.protocol configuration",
            "expects TLS or SASL",
        ),
        ("Failed to resolve 'kafka-0.internal:9092'", "cannot resolve"),
        ("Connect to ipv4#127.0.0.1:9092 failed: Connection refused", "connection refused"),
        ("Failed to get metadata: Local: Broker transport failure", "gave no Kafka metadata"),
    ],
)
def test_kafka_errors_in_plain_words(librdkafka_says: str, expected: str) -> None:
    """Each librdkafka failure text becomes one plain sentence that names the setting to fix."""
    assert expected in explain_kafka_error(librdkafka_says, "b:9092", 5)


def test_a_plaintext_port_seen_by_a_tls_client_is_named() -> None:
    """TLS spoken to a plaintext listener: the doctor says the port does not speak TLS."""
    s = Settings(kafka_security_protocol="SSL")
    text = explain_kafka_error("SSL handshake failed: wrong version number", "b:9092", 5, s)
    assert "does not speak TLS" in text and "SSL" in text


def test_address_helpers() -> None:
    assert parse_bootstrap("a:1, PLAINTEXT://b:2,[::1]:3,c") == [
        ("a", 1),
        ("b", 2),
        ("::1", 3),
        ("c", 9092),
    ]
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


def _cli(env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL") and not k.startswith("SAGA_")
    }
    env.update(env_extra)
    return subprocess.run(
        [SAGA, "doctor"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_exit_codes(settings: Settings, infra: Infra, tmp_path: Path) -> None:
    good = _cli(
        {
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
            "SAGA_REDIS_URL": infra.redis_url,
            "SAGA_COMMANDS_TOPIC": settings.commands_topic,
            "SAGA_EVENTS_TOPIC": settings.events_topic,
            "SAGA_DLQ_TOPIC": settings.dlq_topic,
        },
        tmp_path,
    )
    expected = 0 if redis_config_is_ideal(infra.redis_url) else 1
    assert good.returncode == expected, good.stdout + good.stderr
    assert "ok   kafka:" in good.stdout and "ok   redis:" in good.stdout
    assert "Traceback" not in good.stderr

    bad = _cli(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "REDIS_URL": "redis://no-such-host.invalid:6379/0",
            "SAGA_CONNECT_TIMEOUT_S": "2",
        },
        tmp_path,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL kafka: connection refused" in bad.stdout
    assert "FAIL redis: cannot resolve host name" in bad.stdout
    assert "Traceback" not in bad.stderr


def test_cli_checks_the_configured_saga_modules_topics(
    settings: Settings, infra: Infra, tmp_path: Path
) -> None:
    """`saga doctor` names the command topics of SAGA_SAGA_MODULES (here a user module whose
    one participant is `greeter`), not those of the shipped samples."""
    out = _cli(
        {
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
            "SAGA_REDIS_URL": infra.redis_url,
            "SAGA_COMMANDS_TOPIC": settings.commands_topic,
            "SAGA_EVENTS_TOPIC": settings.events_topic,
            "SAGA_DLQ_TOPIC": settings.dlq_topic,
            "SAGA_SAGA_MODULES": '["tests.support.user_sagas"]',
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        },
        tmp_path,
    )
    [line] = [ln for ln in out.stdout.splitlines() if "kafka command topics" in ln]
    assert f"{settings.commands_topic}.greeter" in line, out.stdout + out.stderr
    assert f"{settings.commands_topic}.payment" not in line, line
