"""Orchestrator settings: the shared connection settings plus the daemon's own knobs."""

from __future__ import annotations

from pydantic import Field

from schemas.config import Settings

#: the shipped order fulfillment saga, loaded by name like any user's saga module
DEFAULT_SAGA_MODULES = ("participants.samples.order.saga",)


class OrchestratorSettings(Settings):
    group_id: str = Field(
        default="", description="consumer group; default '<key_prefix>-orchestrator'"
    )
    batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(default=100, ge=1, le=60_000)
    consumer_session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,  # the broker's group.min.session.timeout.ms
        le=1_800_000,  # and its group.max.session.timeout.ms
        description="a copy that stops answering Kafka (crashed, paused) loses its partitions "
        "after this long, and the other copies take them over, relay work included",
    )
    timer_poll_interval_s: float = Field(default=0.05, gt=0, le=60)
    outbox_sweep_age_s: float = Field(default=5.0, gt=0, le=3600)
    relay_stalled_s: float = Field(
        default=25.0,
        gt=0,
        le=3600,
        description="/readyz reports the relay stalled when no relay round finished for this "
        "long (each copy's relay serves the partitions it owns; there is no lease)",
    )
    compact_after_s: float = Field(
        default=3600.0,
        ge=0,
        le=365 * 24 * 3600,
        description="the relay compacts a completed saga to its summary this long after it "
        "finished (orchestrator/engine/compact.py); 0 = never",
    )
    tombstone_retention_s: int = Field(
        default=90 * 24 * 3600,
        ge=0,
        description="keep a finished saga's id taken this long after its keys expired, so a "
        "late duplicate start cannot run it again; 0 = no tombstones",
    )
    retention_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="keep final sagas this long; 0 = forever"
    )
    state_cache_size: int = Field(
        default=10_000,
        ge=0,
        le=10_000_000,
        description="sagas whose decoded state the partition owner keeps after stepping them, "
        "so their next input needs no read from Redis (orchestrator/engine/cache.py); 0 = off",
    )
    saga_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SAGA_MODULES),
        description="modules exposing SAGAS (orchestrator.engine.sagas); naming any replaces "
        "the default, the shipped order saga",
    )
    infra_backoff_max_s: float = Field(default=5.0, gt=0, le=300)
    stuck_after_s: float = Field(
        default=600.0,
        gt=0,
        le=30 * 24 * 3600,
        allow_inf_nan=False,
        description="a saga not final without a transition for longer than this is stuck in "
        "/metrics' saga_sagas_stuck (the SagaStuck alert); 600 = `saga stuck`'s default 10m",
    )
    # HTTP API, /metrics, /livez, /readyz (orchestrator/ops/http.py); 0 = no HTTP server
    http_port: int = Field(default=0, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_tokens_file: str | None = Field(
        default=None,
        description="bearer tokens, one '<name> <role> <token>' a line (orchestrator/ops/auth.py); "
        "none: no authentication, and the API listens on loopback only",
    )

    @property
    def group(self) -> str:
        return self.group_id or f"{self.key_prefix}-orchestrator"
