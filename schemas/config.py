"""Connection settings shared by the orchestrator, the participants and the CLI.

Built once at the edge (the CLI) and passed down; library code never reads the environment.
Env prefix `SAGA_`; the common `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` are accepted too.
The clients are built from these by `infra.kafka` and `infra.redis`, and nowhere else.

Secrets (`kafka_sasl_password`, `redis_password`) are `SecretStr`: printed or logged, they show
as `**********`. Each can also come from a file named by `<NAME>_FILE` (Docker and Kubernetes
secrets): `SAGA_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka`. Setting both is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: secret fields that may be read from a file named by `<field>_file`
SECRET_FIELDS = ("kafka_sasl_password", "redis_password")
MAX_SECRET_FILE_BYTES = 65_536


def _read_secret(path: str, name: str) -> str:
    """The contents of a secret file, without the trailing newline editors and `echo` add."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_SECRET_FILE_BYTES:
            raise ValueError(f"{name}_FILE {path!r} is larger than {MAX_SECRET_FILE_BYTES} bytes")
        return p.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"{name}_FILE {path!r} cannot be read: {reason}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAGA_", env_file=".env", extra="ignore", populate_by_name=True
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "SAGA_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"
        ),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("SAGA_REDIS_URL", "REDIS_URL", "redis_url"),
    )
    #: a Redis Cluster at redis_url (any of its nodes): redis-py's RedisCluster, and keys
    #: sharded by the saga's partition (`orchestrator.engine.keys`); topic_partitions shards
    redis_cluster: bool = False
    schema_registry_url: str | None = None
    commands_topic: str = "saga-commands"
    events_topic: str = "saga-events"
    dlq_topic: str = "saga-dlq"
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    key_prefix: str = Field(default="saga", pattern=r"^[A-Za-z0-9_\-]{1,32}$")
    output_format: Literal["json", "avro"] = "json"
    max_message_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    # ---- Kafka security (every client: infra/kafka.py) ----
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: str | None = None
    kafka_ssl_cafile: str | None = Field(default=None, description="PEM CA bundle; default: system")
    kafka_ssl_certfile: str | None = Field(default=None, description="PEM client cert (mTLS)")
    kafka_ssl_keyfile: str | None = Field(default=None, description="PEM client key (mTLS)")
    kafka_ssl_check_hostname: bool = True

    # ---- Redis security (every client: infra/redis.py); rediss:// in redis_url turns on TLS ----
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_password_file: str | None = None
    redis_ssl_cafile: str | None = None
    redis_ssl_certfile: str | None = None
    redis_ssl_keyfile: str | None = None
    redis_ssl_check_hostname: bool = True

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        for name in SECRET_FIELDS:
            path = values.get(f"{name}_file")
            if not path:
                continue
            if values.get(name):
                raise ValueError(f"set SAGA_{name.upper()} or SAGA_{name.upper()}_FILE, not both")
            # read once, at start; the path is dropped so a copy of these settings stays valid
            secret = _read_secret(str(path), f"SAGA_{name.upper()}")
            values = {**values, name: secret, f"{name}_file": None}
        return values

    @model_validator(mode="after")
    def _coherent_security(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"SAGA_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "SAGA_KAFKA_SASL_USERNAME and SAGA_KAFKA_SASL_PASSWORD (or _FILE)"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("SAGA_KAFKA_SSL_CERTFILE and SAGA_KAFKA_SSL_KEYFILE go together")
        if bool(self.redis_ssl_certfile) != bool(self.redis_ssl_keyfile):
            raise ValueError("SAGA_REDIS_SSL_CERTFILE and SAGA_REDIS_SSL_KEYFILE go together")
        return self

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def redis_tls(self) -> bool:
        return self.redis_url.startswith("rediss://")
