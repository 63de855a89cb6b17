"""Connection settings shared by the orchestrator, the participants and the CLI.

Built once at the edge (the CLI) and passed down; library code never reads the environment.
Env prefix `SAGA_`; the common `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` are accepted too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
