"""The contract between users, the orchestrator and the participants: message models and codec."""

from schemas.codec import DecodeError, decode, encode
from schemas.messages import (
    Message,
    OperatorCommand,
    OrderItem,
    SagaCommand,
    Signal,
    StartOrder,
    StartSaga,
    StepCompensated,
    StepCompleted,
    StepFailed,
    TimerFired,
)

__all__ = [
    "DecodeError",
    "Message",
    "OperatorCommand",
    "OrderItem",
    "SagaCommand",
    "Signal",
    "StartOrder",
    "StartSaga",
    "StepCompensated",
    "StepCompleted",
    "StepFailed",
    "TimerFired",
    "decode",
    "encode",
]
