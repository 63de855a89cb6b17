"""Settings of the choreography sample (env prefix `SAGA_`)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChoreoConfig(BaseSettings):
    """`SAGA_CHOREO_TOPIC`: the topic the services and the tracker share (`saga tracker run`
    reads the same variable); `SAGA_CHOREO_PAYMENT_LIMIT`: charges above it are declined;
    `SAGA_CHOREO_DECLINED_METHOD`: the payment method that is always declined."""

    model_config = SettingsConfigDict(env_prefix="SAGA_", env_file=".env", extra="ignore")

    choreo_topic: str = Field(default="choreo-events", min_length=1, max_length=249)
    choreo_payment_limit: Decimal = Field(default=Decimal("10000"), ge=0)
    choreo_declined_method: str = "card-declined"
