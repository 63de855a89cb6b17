"""Settings of the order sample's workers (env prefix `SAGA_`), next to the SDK's
`ParticipantConfig` rather than in it: the SDK knows nothing of payments."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrderConfig(BaseSettings):
    """`SAGA_PAYMENT_LIMIT`: payments above it are declined; `SAGA_PAYMENT_DECLINED_METHOD`: the
    test payment method that is always declined."""

    model_config = SettingsConfigDict(env_prefix="SAGA_", env_file=".env", extra="ignore")

    payment_limit: Decimal = Field(default=Decimal("10000"), ge=0)
    payment_declined_method: str = "card-declined"
