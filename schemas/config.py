"""Connection settings shared by the orchestrator, the participants and the CLI.

Built once at the edge (the CLI) and passed down; library code never reads the environment.
Env prefix `SAGA_`; the common `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` are accepted too.
The clients are built from these by `infra.kafka` and `infra.redis`, and nowhere else.

Secrets (`kafka_sasl_password`, `redis_password`) are `SecretStr`: printed or logged, they show
as `**********`. Each can also come from a file named by `<NAME>_FILE` (Docker and Kubernetes
secrets): `SAGA_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka`. Setting both is an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: secret fields that may be read from a file named by `<field>_file`
SECRET_FIELDS = ("kafka_sasl_password", "redis_password")
MAX_SECRET_FILE_BYTES = 65_536
#: a legal Kafka topic name (Kafka's own rule: these characters, at most 249, not "." or "..")
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
CommandTopics = Literal["per-participant", "single"]


def check_topic_name(name: object, what: str) -> str:
    """`name` when Kafka would take it as a topic name; else a ValueError naming `what`."""
    if not isinstance(name, str) or not TOPIC_NAME.match(name) or name in (".", ".."):
        shown = repr(name) if len(repr(name)) <= 80 else f"{repr(name)[:77]}..."
        raise ValueError(
            f"{what} {shown} is not a Kafka topic name: 1 to 249 letters, digits, '.', '_' "
            "or '-' (and not '.' or '..')"
        )
    return name


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
    #: where participant commands go (docs/ARCHITECTURE.md, "Command topics"): each
    #: participant's own `<commands_topic>.<participant>` (or its step's `topic`), read by its
    #: workers only; or "single": all on commands_topic, which every worker reads and skips from
    command_topics: CommandTopics = "per-participant"
    #: per-participant mode: topics a worker reads besides its own, for steps whose definition
    #: names a `topic` (`StepDef.topic`); e.g. '["payments.commands"]'
    extra_command_topics: list[str] = Field(default_factory=list, max_length=100)
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    #: Kafka static membership (KIP-345) for the orchestrator's and the workers' consumers: a
    #: copy restarted under the same id (a crashed container in the same pod, a process the
    #: supervisor restarts) gets its partitions back at once instead of waiting out the session
    #: timeout of its dead self. Unique per copy within a group. A copy stopped for good under an
    #: id keeps its partitions until the session timeout (static members do not leave).
    group_instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$")
    key_prefix: str = Field(default="saga", pattern=r"^[A-Za-z0-9_\-]{1,32}$")
    output_format: Literal["json", "avro"] = "json"
    max_message_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    # ---- Kafka waits (every aiokafka client: infra/kafka.py; docs/PERFORMANCE.md, "Latency") ----
    #: how long a producer holds a record for others to join its batch. 0 sends at once: one
    #: saga on an idle stack crosses Kafka 9 times and would wait this long at each; under
    #: load, batches form anyway while the previous request is in flight
    kafka_linger_ms: int = Field(default=0, ge=0, le=1000)
    #: how long the broker holds a consumer's fetch while it has nothing to return; a record
    #: arriving ends the wait at once, so this bounds empty polls, not a record's latency
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=0, le=30_000)
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

    @field_validator("commands_topic", "events_topic", "dlq_topic")
    @classmethod
    def _topic_name(cls, value: object, info: ValidationInfo) -> str:
        return check_topic_name(value, f"SAGA_{str(info.field_name).upper()}")

    @field_validator("extra_command_topics")
    @classmethod
    def _topic_names(cls, value: list[object]) -> list[str]:
        return [check_topic_name(v, "a topic of SAGA_EXTRA_COMMAND_TOPICS") for v in value]

    def command_topic_of(self, participant: str) -> str:
        """The topic commands for `participant` go to, and its workers read (a step's own
        `topic` aside): the contract between the orchestrator and the participants."""
        if self.command_topics == "single":
            return self.commands_topic
        return f"{self.commands_topic}.{participant}"

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
