"""Security settings: secrets from files, never printed, coherent combinations, and the options
the one client factory hands to aiokafka, librdkafka and redis-py."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra import kafka
from infra import redis as redis_factory
from schemas.config import Settings
from tests.conftest import ROOT

SECRET = "s3cret-Pa55-do-not-print"


def sasl(**extra: object) -> Settings:
    return Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="saga",
        **extra,  # type: ignore[arg-type]
    )


def test_a_secret_comes_from_its_file_without_the_trailing_newline(tmp_path: Path) -> None:
    """SAGA_KAFKA_SASL_PASSWORD_FILE (a Docker or Kubernetes secret) fills the password."""
    f = tmp_path / "kafka-password"
    f.write_text(SECRET + "\n")
    s = sasl(kafka_sasl_password_file=str(f))
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == SECRET
    redis_file = tmp_path / "redis-password"
    redis_file.write_text("r3dis\r\n")
    r = Settings(redis_password_file=str(redis_file))
    assert r.redis_password is not None and r.redis_password.get_secret_value() == "r3dis"


def test_a_copy_of_settings_read_from_a_file_stays_valid(tmp_path: Path) -> None:
    """The password was read once; copying the settings does not read (or refuse) it again."""
    f = tmp_path / "p"
    f.write_text(SECRET)
    s = sasl(kafka_sasl_password_file=str(f))
    f.unlink()
    assert Settings(**s.model_dump()).kafka_sasl_password == s.kafka_sasl_password


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_sasl_password": "x", "kafka_sasl_password_file": "/etc/hostname"}, "not both"),
        ({"kafka_sasl_password_file": "/nonexistent/secret"}, "cannot be read"),
        ({}, "needs SAGA_KAFKA_SASL_USERNAME and SAGA_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_password": "x", "kafka_ssl_certfile": "/c.pem"}, "go together"),
    ],
)
def test_incoherent_security_settings_are_refused(values: dict[str, str], message: str) -> None:
    """Half a configuration is an error at start, not a connection failure later."""
    with pytest.raises(ValidationError, match=message):
        sasl(**values)


def test_a_secret_file_that_is_not_a_secret_is_refused(tmp_path: Path) -> None:
    """A path to something huge or binary is refused with a reason, not read into memory."""
    big = tmp_path / "big"
    big.write_bytes(b"x" * 70_000)
    with pytest.raises(ValidationError, match="larger than"):
        sasl(kafka_sasl_password_file=str(big))
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValidationError, match="cannot be read"):
        sasl(kafka_sasl_password_file=str(binary))


def test_secrets_never_show_when_settings_are_printed() -> None:
    """repr, str and a JSON dump of the settings mask both passwords."""
    s = sasl(kafka_sasl_password=SECRET, redis_password=SECRET)
    for text in (repr(s), str(s), s.model_dump_json()):
        assert SECRET not in text and "**********" in text


def test_aiokafka_gets_tls_with_hostname_checks_and_sasl(tmp_path: Path) -> None:
    """SASL_SSL: a verifying TLS context (hostname checked by default) and the SCRAM login."""
    opts = kafka.client_options(sasl(kafka_sasl_password=SECRET))
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512" and opts["sasl_plain_username"] == "saga"
    assert opts["sasl_plain_password"] == SECRET
    context: ssl.SSLContext = opts["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    off = kafka.client_options(sasl(kafka_sasl_password=SECRET, kafka_ssl_check_hostname=False))
    assert not off["ssl_context"].check_hostname
    plain = kafka.client_options(Settings())
    assert plain["security_protocol"] == "PLAINTEXT" and "ssl_context" not in plain


def test_librdkafka_gets_the_same_configuration() -> None:
    """The confluent-kafka clients (admin, doctor) authenticate the same way."""
    s = sasl(kafka_sasl_password=SECRET, kafka_ssl_cafile="/ca.pem")
    opts = kafka.librdkafka_options(s)
    assert opts["security.protocol"] == "sasl_ssl"
    assert opts["sasl.mechanisms"] == "SCRAM-SHA-512" and opts["sasl.username"] == "saga"
    assert opts["ssl.ca.location"] == "/ca.pem"
    assert opts["ssl.endpoint.identification.algorithm"] == "https"
    assert "ssl.certificate.location" not in opts
    assert kafka.librdkafka_options(Settings())["security.protocol"] == "plaintext"


def test_redis_gets_the_acl_login_and_tls_only_for_rediss() -> None:
    """rediss:// turns on a verifying TLS connection; user and password come from settings."""
    s = Settings(
        redis_url="rediss://localhost:6380/0",
        redis_username="orchestrator",
        redis_password=SECRET,
        redis_ssl_cafile="/ca.pem",
    )
    kwargs = redis_factory.client(s).connection_pool.connection_kwargs
    assert kwargs["username"] == "orchestrator" and kwargs["password"] == SECRET
    assert kwargs["ssl_ca_certs"] == "/ca.pem" and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True
    plain = redis_factory.client(Settings()).connection_pool.connection_kwargs
    assert "ssl_ca_certs" not in plain and "password" not in plain


def test_a_half_configured_login_is_one_line_and_exit_2() -> None:
    """From the real CLI: SASL without a user is one line naming the settings, exit code 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", "doctor"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "SAGA_KAFKA_SASL_USERNAME" in lines[0] and "Traceback" not in proc.stderr


def test_a_settings_error_never_echoes_a_password() -> None:
    """A cross-field error with a password set prints the reason, not the settings' values."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SAGA_KAFKA_SASL_USERNAME": "saga",
        "SAGA_KAFKA_SASL_PASSWORD": SECRET,
        "SAGA_KAFKA_SSL_CERTFILE": "/only-the-cert.pem",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", "doctor"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "go together" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
