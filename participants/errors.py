"""The participant error tree.

    ParticipantError
     +-- StepError                 a handler's verdict on one command; becomes a StepFailed reply
     |    +-- RetryableError       try again later (the orchestrator retries with backoff)
     |    +-- NonRetryableError    will never succeed (the orchestrator compensates)
     +-- InfrastructureError       Redis or Kafka is unreachable: retried in place with backoff,
                                   never replied, never dead-lettered

Any other exception a handler raises is treated as retryable, with its class and message as the
reason: an unexpected bug should not make a saga compensate on the first try.
"""

from __future__ import annotations

from infra.errors import KAFKA_TRANSIENT, REDIS_TRANSIENT, is_transient
from infra.rdkafka import KafkaClientError


class ParticipantError(Exception):
    """Root of the errors the SDK defines."""


class StepError(ParticipantError):
    """A handler's failure verdict. `retryable` says whether another attempt can succeed."""

    retryable: bool = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(StepError):
    """The step failed this time (a dependency is busy, a lock is held); retrying may succeed."""

    retryable = True


class NonRetryableError(StepError):
    """The step can never succeed (out of stock, card declined); the saga should compensate."""

    retryable = False


class InfrastructureError(ParticipantError):
    """Our own storage or broker is unreachable. Raise it from a handler to get the same
    treatment as a Redis outage: the command is retried in place, nothing is replied."""


#: Retried in place, never replied or dead-lettered: our own `InfrastructureError` and what
#: redis-py / aiokafka raise when the server is away, overloaded or failing over
#: (`infra.errors`); and a librdkafka error (`KafkaClientError`, one class for every code) of
#: the transient kind, which `is_infrastructure` tells by its code. Not a Lua error (a bug in a
#: script), nor a plain OSError or TimeoutError a handler's own HTTP call may raise: those are
#: the handler's failures, replied as retryable.
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    InfrastructureError,
    *REDIS_TRANSIENT,
    *KAFKA_TRANSIENT,
)


def is_infrastructure(exc: BaseException) -> bool:
    if isinstance(exc, KafkaClientError):
        return is_transient(exc)  # a broker away or a leader moving, not a record too large
    return isinstance(exc, INFRA_ERRORS)


def classify(exc: BaseException) -> tuple[bool, str]:
    """(retryable, reason) for a handler exception that is not an infrastructure error."""
    if isinstance(exc, StepError):
        return exc.retryable, exc.reason[:4000]
    text = str(exc)
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return True, reason[:4000]
