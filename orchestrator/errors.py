"""Errors of the orchestrator.

    SagaError
    +-- ConfigError          bad configuration; the process cannot start
    +-- ConflictError        inputs kept losing the version race to another writer; the batch
                             is retried (never dead-lettered)

Kafka and Redis failures are not wrapped: the loop retries the client libraries' own errors that
can clear by themselves (`infra.errors.is_transient`) with backoff and never dead-letters them; a
Kafka error that can never succeed for one record (a command too large for the topic) dead-letters
the input that caused it (`orchestrator/engine/publish.py`). Poison input is not an exception
here either: the codec raises `schemas.DecodeError` and the core returns a `rejected`
transition; both end in the dead-letter topic.
"""


class SagaError(Exception):
    """Root of the orchestrator's errors."""


class ConfigError(SagaError):
    """The configuration cannot work (bad saga module, bad setting)."""


class ConflictError(SagaError):
    """Another writer advanced the same sagas every time this copy tried; retry the batch."""
