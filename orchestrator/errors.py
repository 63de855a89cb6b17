"""Errors of the orchestrator.

    SagaError
    +-- ConfigError          bad configuration; the process cannot start
    +-- InfrastructureError  Kafka or Redis unreachable; retried with backoff, never dead-lettered

Poison input is not an exception here: the codec raises `schemas.DecodeError` and the core
returns a `rejected` transition; both end in the dead-letter topic.
"""


class SagaError(Exception):
    """Root of the orchestrator's errors."""


class ConfigError(SagaError):
    """The configuration cannot work (bad saga module, bad setting)."""


class InfrastructureError(SagaError):
    """Kafka or Redis did not answer; the operation is retried."""
