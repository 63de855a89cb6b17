"""Between wire messages (schemas) and the core's events and commands."""

from __future__ import annotations

from orchestrator.core.definition import SagaDefinition
from orchestrator.core.model import (
    Command,
    Event,
    Operator,
    Reply,
    SagaState,
    Signal,
    Start,
    TimerDue,
)
from orchestrator.engine.sagas import StartMapper
from orchestrator.engine.store import OutboxEntry
from orchestrator.engine.topics import H_COMMAND_TOPIC
from schemas import codec
from schemas.codec import Format
from schemas.headers import (
    H_CORRELATION_ID,
    H_MESSAGE_ID,
    H_MESSAGE_TYPE,
    H_PARTICIPANT,
    H_SAGA_ID,
    H_TRACEPARENT,
)
from schemas.messages import (
    Envelope,
    OperatorCommand,
    SagaCommand,
    StartSaga,
    StepCompensated,
    StepCompleted,
    StepFailed,
    TimerFired,
)
from schemas.messages import Signal as SignalMessage


class UnknownStart(ValueError):
    """A start message that no saga module maps to a saga type: poison, never retried."""


def to_event(msg: Envelope, starts: dict[type[Envelope], StartMapper]) -> Event | None:
    """The core event for a message, or None for messages the orchestrator does not consume
    (in single-topic mode, participant commands share the commands topic with the start
    commands). A start message
    other than StartSaga becomes a Start through the saga module that maps its class."""
    mapper = starts.get(type(msg))
    if mapper is not None:
        saga_type, data = mapper(msg)
        return Start(msg.saga_id, saga_type, data, msg.correlation_id or "", msg.traceparent or "")
    if isinstance(msg, StartSaga):
        return Start(
            msg.saga_id, msg.saga_type, msg.data, msg.correlation_id or "", msg.traceparent or ""
        )
    if isinstance(msg, StepCompleted | StepFailed | StepCompensated):
        return _reply(msg)
    if isinstance(msg, TimerFired):
        return TimerDue(msg.timer_kind, msg.step, msg.attempt, msg.compensation)
    if isinstance(msg, OperatorCommand):
        return Operator(msg.action, msg.step, msg.reason, msg.operator)
    if isinstance(msg, SignalMessage):
        # signal_id is informational: the daemon dedupes every input by `dedupe_id`, which is
        # this message id when the sender gave one (the header or log position otherwise)
        return Signal(msg.name, msg.message_id, dict(msg.data), msg.sender)
    if isinstance(msg, SagaCommand):
        return None
    raise UnknownStart(
        f"unknown saga type: no saga module maps {type(msg).__name__} to a saga type"
    )


def _reply(msg: StepCompleted | StepFailed | StepCompensated) -> Reply:
    """One builder for the three reply kinds: they differ only in kind and what they carry."""
    failed = isinstance(msg, StepFailed)
    return Reply(
        "completed" if isinstance(msg, StepCompleted) else "failed" if failed else "compensated",
        msg.step,
        msg.attempt,
        True if isinstance(msg, StepCompensated) else msg.compensation,
        dict(msg.result) if isinstance(msg, StepCompleted) else {},
        msg.retryable if isinstance(msg, StepFailed) else False,
        msg.reason if isinstance(msg, StepFailed) else "",
        command_id=msg.command_id,
    )


def dedupe_id(msg: Envelope, position: str, header_id: str | None = None) -> str:
    """The id an input is deduplicated by: its messageId when the sender gave one; else the
    `saga-message-id` header (set by `saga dlq replay` to the record's original position, so a
    replay run twice applies once); else its position in the log (`topic:partition:offset`), so
    a redelivered record is recognised even when a person typed it without an id. A second
    StartOrder with another id is not a duplicate input: the core records it and starts
    nothing new."""
    if "message_id" in msg.model_fields_set:
        return msg.message_id
    return header_id or position


def command_record(
    state: SagaState, cmd: Command, causation_id: str, fmt: Format, definition: SagaDefinition
) -> OutboxEntry:
    """The record of a command, headers first (participants route by them without decoding);
    a step with its own topic says so in `saga-command-topic` (`orchestrator.engine.topics`).
    Built without validation (`model_construct`): every value comes from the saga's own state
    and its definition, both validated when they were made, and validating them again cost the
    daemon a few percent of its CPU per step; `tests/test_translate_commands.py` pins the
    bytes to what the validated model writes."""
    msg = SagaCommand.model_construct(
        message_id=cmd.command_id,
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        correlation_id=state.correlation_id or None,
        causation_id=causation_id,
        traceparent=state.traceparent or None,
        participant=cmd.participant,
        command_type=cmd.command_type,
        step=cmd.step,
        attempt=cmd.attempt,
        compensation=cmd.compensation,
        data=state.data,
        original_result=cmd.original_result,
    )
    headers = [
        (H_MESSAGE_TYPE, b"SagaCommand"),
        (H_PARTICIPANT, cmd.participant.encode()),
        (H_SAGA_ID, state.saga_id.encode()),
        (H_MESSAGE_ID, cmd.command_id.encode()),
        (H_CORRELATION_ID, state.correlation_id.encode()),
    ]
    if state.traceparent:
        headers.append((H_TRACEPARENT, state.traceparent.encode()))
    i = definition.index(cmd.step)
    if i is not None and definition.steps[i].topic:
        headers.append((H_COMMAND_TOPIC, definition.steps[i].topic.encode()))
    return OutboxEntry(state.saga_id.encode(), codec.encode(msg, fmt), headers)


def timer_record(
    saga_id: str, member: str, due: TimerDue, fmt: Format
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    msg = TimerFired(
        message_id=f"timer|{member}",
        saga_id=saga_id,
        timer_kind=due.kind,
        step=due.step,
        attempt=due.attempt,
        compensation=due.compensation,
    )
    headers = [(H_MESSAGE_TYPE, b"TimerFired"), (H_SAGA_ID, saga_id.encode())]
    return saga_id.encode(), codec.encode(msg, fmt), headers
