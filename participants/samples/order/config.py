"""Settings of the order sample's workers (env prefix `SAGA_`), next to the SDK's
`ParticipantConfig` rather than in it: the SDK knows nothing of payments."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrderConfig(BaseSettings):
    """`SAGA_PAYMENT_LIMIT`: payments above it are declined; `SAGA_PAYMENT_DECLINED_METHOD`: the
    test payment method that is always declined; `SAGA_PARTICIPANT_HTTP_PORT`: when set, each
    sample worker serves `POST /api/test/fail-next-request` (`participants.samples.faults.http`)
    on it (`run all`: the four workers on that port and the next three), on
    `SAGA_PARTICIPANT_HTTP_HOST`."""

    model_config = SettingsConfigDict(env_prefix="SAGA_", env_file=".env", extra="ignore")

    payment_limit: Decimal = Field(default=Decimal("10000"), ge=0)
    payment_declined_method: str = "card-declined"
    participant_http_port: int | None = Field(default=None, ge=1, le=65_535 - 3)
    participant_http_host: str = "127.0.0.1"
