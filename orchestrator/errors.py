"""Errors of the orchestrator.

    SagaError
    +-- ConfigError          bad configuration; the process cannot start

Kafka and Redis failures are not wrapped: the daemon retries the client libraries' own
connection and timeout errors with backoff (`daemon.INFRA_ERRORS`) and never dead-letters them.
Poison input is not an exception here either: the codec raises `schemas.DecodeError` and the core
returns a `rejected` transition; both end in the dead-letter topic.
"""


class SagaError(Exception):
    """Root of the orchestrator's errors."""


class ConfigError(SagaError):
    """The configuration cannot work (bad saga module, bad setting)."""
