"""Settings of the worker loop (env prefix `SAGA_`).

Built once at the edge (the CLI) like `schemas.config.Settings`; library code receives the values.
A participant's own settings are its own business (the order sample has
`participants.samples.order.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

WEEK_S = 7 * 24 * 3600


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker consumes. Defaults suit a benchmark: big batches, many sagas in flight."""

    max_batch: int = 500
    concurrency: int = 64
    poll_timeout_ms: int = 200
    reply_ttl_s: int = WEEK_S
    #: Exit after this long without a record once the group is joined (None: run until stopped).
    idle_exit_s: float | None = None
    #: Upper bound of the backoff while Redis or Kafka is unreachable.
    max_backoff_s: float = 5.0
    #: Where a new consumer group starts. "earliest" so that commands produced before the
    #: group first joined are not lost.
    start_from: str = "earliest"
    #: How long a rebalance waits for the batch in progress before giving its partitions away.
    revoke_wait_s: float = 30.0
    #: "batched": the guard reads a batch with one script call and sends its commits together;
    #: "per-command" turns that off, for measuring (participants.store.GUARD_MODES).
    guard: str = "batched"


class ParticipantConfig(BaseSettings):
    """How `saga participant run` runs its workers: `SAGA_PARTICIPANT_MAX_BATCH`,
    `SAGA_PARTICIPANT_CONCURRENCY`, `SAGA_PARTICIPANT_REPLY_TTL_S`, `SAGA_PARTICIPANT_GUARD`."""

    model_config = SettingsConfigDict(env_prefix="SAGA_", env_file=".env", extra="ignore")

    participant_max_batch: int = Field(default=500, ge=1, le=10_000)
    participant_concurrency: int = Field(default=64, ge=1, le=10_000)
    participant_reply_ttl_s: int = Field(default=WEEK_S, ge=60)
    participant_guard: Literal["batched", "per-command"] = "batched"

    def worker_options(self, idle_exit_s: float | None = None) -> WorkerOptions:
        return WorkerOptions(
            max_batch=self.participant_max_batch,
            concurrency=self.participant_concurrency,
            reply_ttl_s=self.participant_reply_ttl_s,
            guard=self.participant_guard,
            idle_exit_s=idle_exit_s,
        )
