"""Message models: one envelope, typed payloads.

Field names are snake_case in Python and camelCase on the wire (the reference document's
`sagaId`, `productId`); input is accepted in either spelling. `message_type` is the
discriminator; the reference document's `command` and a plain `type` are accepted as aliases
on input so that `{"sagaId":"123","command":"StartOrder",...}` typed into a console works.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

#: Saga ids become Redis keys, Kafka keys and parts of command ids: short, no spaces, braces,
#: colons or pipes (those separate the parts of derived keys and ids).
SAGA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
SagaId = Annotated[str, StringConstraints(pattern=SAGA_ID_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")]
#: A saga type: a Name, or empty for a message that does not state one.
SagaType = Annotated[str, StringConstraints(pattern=r"^(?:[A-Za-z][A-Za-z0-9_.\-]{0,63})?$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
LongText = Annotated[str, StringConstraints(max_length=4096)]
Results = dict[Annotated[str, StringConstraints(max_length=64)], LongText]
#: A signal's name, as a wait step names the signals it takes (`orchestrator.core.definition`).
SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
SignalName = Annotated[str, StringConstraints(pattern=SIGNAL_NAME_PATTERN)]
#: A signal's data becomes the wait step's result in the saga hash: kept small, like a result.
MAX_SIGNAL_DATA_BYTES = 16_384


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
    )


class Envelope(_Model):
    """Fields every message carries."""

    message_id: ShortText = Field(default_factory=new_id, min_length=1)
    saga_id: SagaId
    #: The saga definition the message belongs to; empty when not stated. StartSaga names the
    #: type to start (an empty one is rejected as unknown); the orchestrator decides a
    #: StartOrder's type itself; commands carry their saga's type and replies copy it.
    saga_type: SagaType = ""
    correlation_id: ShortText | None = None
    causation_id: ShortText | None = None
    time: datetime = Field(default_factory=now_utc)
    traceparent: ShortText | None = None


class OrderItem(_Model):
    product_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    quantity: int = Field(gt=0, le=1_000_000)


class StartOrder(Envelope):
    """Starts an order fulfillment saga (the reference document's StartOrder)."""

    message_type: Literal["StartOrder"] = Field(
        default="StartOrder",
        validation_alias=AliasChoices("messageType", "message_type", "command", "type"),
    )
    order_id: ShortText | None = None
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    amount: Decimal = Field(ge=0, le=Decimal("1e12"), decimal_places=2, allow_inf_nan=False)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    payment_method: ShortText = "card"
    shipping_address: LongText | None = None

    def order_data(self) -> dict[str, Any]:
        """The order as it is stored in the saga and sent to participants (JSON-safe)."""
        return {
            "orderId": self.order_id or self.saga_id,
            "customerId": self.customer_id,
            "items": [{"productId": i.product_id, "quantity": i.quantity} for i in self.items],
            "amount": str(self.amount),
            "currency": self.currency,
            "paymentMethod": self.payment_method,
            "shippingAddress": self.shipping_address,
        }


class StartSaga(Envelope):
    """Starts a saga of any registered type with free-form JSON data."""

    message_type: Literal["StartSaga"] = Field(
        default="StartSaga",
        validation_alias=AliasChoices("messageType", "message_type", "command", "type"),
    )
    data: dict[str, Any] = Field(default_factory=dict)


class SagaCommand(Envelope):
    """A command from the orchestrator to a participant (an action or a compensation)."""

    message_type: Literal["SagaCommand"] = Field(
        default="SagaCommand",
        validation_alias=AliasChoices("messageType", "message_type", "command", "type"),
    )
    participant: Name
    command_type: Name
    step: Name
    attempt: int = Field(ge=1, le=1000)
    compensation: bool = False
    data: dict[str, Any] = Field(default_factory=dict)
    original_result: Results | None = None


class _Reply(Envelope):
    step: Name
    attempt: int = Field(ge=1, le=1000)
    command_id: ShortText
    command_type: Name
    compensation: bool = False


class StepCompleted(_Reply):
    message_type: Literal["StepCompleted"] = Field(
        default="StepCompleted",
        validation_alias=AliasChoices("messageType", "message_type", "type"),
    )
    result: Results = Field(default_factory=dict)


class StepFailed(_Reply):
    message_type: Literal["StepFailed"] = Field(
        default="StepFailed", validation_alias=AliasChoices("messageType", "message_type", "type")
    )
    retryable: bool
    reason: LongText


class StepCompensated(_Reply):
    message_type: Literal["StepCompensated"] = Field(
        default="StepCompensated",
        validation_alias=AliasChoices("messageType", "message_type", "type"),
    )


class TimerFired(Envelope):
    """A due timer: a step (or compensation) timed out, or a retry is due."""

    message_type: Literal["TimerFired"] = Field(
        default="TimerFired", validation_alias=AliasChoices("messageType", "message_type", "type")
    )
    timer_kind: Literal["timeout", "retry"]
    step: Name
    attempt: int = Field(ge=1, le=1000)
    compensation: bool = False


class OperatorCommand(Envelope):
    """A person stepping in: retry, abort, resume, or record a compensation done by hand."""

    message_type: Literal["OperatorCommand"] = Field(
        default="OperatorCommand",
        validation_alias=AliasChoices("messageType", "message_type", "command", "type"),
    )
    action: Literal["retry", "abort", "resume", "skip_compensation"]
    step: Name | None = None
    reason: LongText = ""
    operator: ShortText = "unknown"


def _small_data(data: dict[str, Any]) -> dict[str, Any]:
    size = len(orjson.dumps(data, default=str))
    if size > MAX_SIGNAL_DATA_BYTES:
        raise ValueError(f"{size} bytes of JSON, over the limit of {MAX_SIGNAL_DATA_BYTES}")
    return data


SignalData = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Any], AfterValidator(_small_data)
]


class Signal(Envelope):
    """A named outside event for a saga, such as an approval, sent to the events topic by any
    producer (`saga signal`, the HTTP API, kcat). A wait step that waits for `name` takes it;
    its `data` becomes the step's result. `messageId` is its dedupe id: without one, the
    orchestrator falls back to the record's `saga-message-id` header, then its log position."""

    message_type: Literal["Signal"] = Field(
        default="Signal",
        validation_alias=AliasChoices("messageType", "message_type", "command", "type"),
    )
    name: SignalName
    data: SignalData = Field(default_factory=dict)
    #: who sent it (a login or token name); shown in the saga's history
    sender: ShortText = ""


Message = (
    StartOrder
    | StartSaga
    | SagaCommand
    | StepCompleted
    | StepFailed
    | StepCompensated
    | TimerFired
    | OperatorCommand
    | Signal
)

MESSAGE_TYPES: dict[str, type[Envelope]] = {
    "StartOrder": StartOrder,
    "StartSaga": StartSaga,
    "SagaCommand": SagaCommand,
    "StepCompleted": StepCompleted,
    "StepFailed": StepFailed,
    "StepCompensated": StepCompensated,
    "TimerFired": TimerFired,
    "OperatorCommand": OperatorCommand,
    "Signal": Signal,
}
