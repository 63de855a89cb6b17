"""The commands the engine builds skip pydantic's validation (`translate.command_record`): they
must read back as, and encode to exactly the bytes of, what the validated model writes, in both
output formats, for an action, a retry with a correlation id and a trace, and a compensation
carrying the step's result."""

from __future__ import annotations

import pytest

from orchestrator.core.model import Command, SagaState, Status, StepState
from orchestrator.engine.translate import command_record
from participants.samples.order.saga import ORDER_FULFILLMENT
from schemas import codec
from schemas.messages import SagaCommand

DATA = {"orderId": "o-1", "items": [{"sku": "A-1", "qty": 2}], "amount": 42.5, "note": "ü ✓"}


def state(correlation: str = "", trace: str = "") -> SagaState:
    steps = tuple(StepState() for _ in ORDER_FULFILLMENT.steps)
    return SagaState(
        "s-1", ORDER_FULFILLMENT.name, 1, Status.PENDING, 0, steps, DATA,
        correlation_id=correlation, traceparent=trace,
    )  # fmt: skip


CASES = [
    (state(), Command("s-1:reserve_inventory:action:1", "inventory", "reserve_inventory",
                      "reserve_inventory", 1, False)),
    (state("corr-9", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
     Command("s-1:charge_payment:action:3", "payment", "charge_payment", "charge_payment", 3,
             False)),
    (state("corr-9"), Command("s-1:reserve_inventory:compensation:1", "inventory",
                              "release_inventory", "reserve_inventory", 1, True,
                              {"reservationId": "res-7"})),
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "avro"])
@pytest.mark.parametrize(("st", "cmd"), CASES)
def test_unvalidated_command_writes_the_validated_bytes(
    st: SagaState, cmd: Command, fmt: codec.Format
) -> None:
    entry = command_record(st, cmd, "cause-1", fmt, ORDER_FULFILLMENT)
    validated = SagaCommand(
        message_id=cmd.command_id,
        saga_id=st.saga_id,
        saga_type=st.saga_type,
        correlation_id=st.correlation_id or None,
        causation_id="cause-1",
        traceparent=st.traceparent or None,
        participant=cmd.participant,
        command_type=cmd.command_type,
        step=cmd.step,
        attempt=cmd.attempt,
        compensation=cmd.compensation,
        data=st.data,
        original_result=cmd.original_result,
    )
    # same fields and values (the send time aside), and in JSON the same bytes
    built = codec.decode(entry.value)
    assert isinstance(built, SagaCommand)
    validated = validated.model_copy(update={"time": built.time})
    assert built == validated
    assert entry.value == codec.encode(validated, fmt)
