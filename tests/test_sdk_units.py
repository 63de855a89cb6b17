"""Pure parts of the SDK, no infrastructure: routing, outcomes, replies, error classification."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.exceptions as rx
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import KafkaError as RdError

import participants.sdk as sdk
from infra.rdkafka import KafkaClientError
from participants.context import Effects
from participants.errors import classify, is_infrastructure
from participants.outcome import Outcome, build_reply, check_result, reply_id, reply_record
from participants.routing import DeadLetter, Deliver, Skip, route
from participants.testing import command
from schemas import codec
from schemas.headers import H_MESSAGE_TYPE, H_PARTICIPANT
from schemas.messages import StepCompensated, StepCompleted, StepFailed

MAX = 1_000_000
CMD = command("s1", "inventory", "ReserveItems", "reserve_inventory")
OURS = [(H_PARTICIPANT, b"inventory"), (H_MESSAGE_TYPE, b"SagaCommand")]


def test_public_api_is_exported() -> None:
    """Everything in sdk.__all__ exists."""
    for name in sdk.__all__:
        assert hasattr(sdk, name), name


@pytest.mark.parametrize(
    ("value", "headers", "expected"),
    [
        (b"\xff", [(H_PARTICIPANT, b"payment")], Skip),  # not ours: never decoded
        (b"\xff", [(H_MESSAGE_TYPE, b"StartOrder")], Skip),  # typed, not a command
        (b"\xff", [], Skip),  # undecodable without our header: the orchestrator's
        (b"\xff", OURS, DeadLetter),
        (b"{", OURS, DeadLetter),
        (codec.encode(CMD), [], Deliver),  # headerless command for us
        (codec.encode(CMD), OURS, Deliver),
        (codec.encode(CMD.model_copy(update={"participant": "payment"})), [], Skip),
        (codec.encode(CMD.model_copy(update={"participant": "payment"})), OURS, DeadLetter),
    ],
)
def test_route(value: bytes, headers: list[tuple[str, bytes]], expected: type) -> None:
    """The routing rule of routing.py's docstring, case by case."""
    assert isinstance(route(value, headers, "inventory", MAX), expected)


def test_route_reports_the_decode_error_kind() -> None:
    """The dead letter carries the codec's kind and reason."""
    r = route(b"x" * 2000, OURS, "inventory", 1024)
    assert isinstance(r, DeadLetter) and r.kind == "too_large"


def test_outcome_round_trip_and_reply() -> None:
    """A stored outcome becomes the matching reply, deterministic in id and time."""
    o = Outcome.from_json(
        b'{"kind":"completed","result":{"reservationId":"r"},"time":1700000000000}'
    )
    reply = build_reply(CMD, o)
    assert isinstance(reply, StepCompleted) and reply.result == {"reservationId": "r"}
    assert reply.message_id == f"{CMD.message_id}:reply" and reply.causation_id == CMD.message_id
    assert reply.time == datetime.fromtimestamp(1_700_000_000, UTC)
    assert reply_record(CMD, o, "inventory", "json") == reply_record(CMD, o, "inventory", "json")
    assert isinstance(build_reply(CMD, Outcome("compensated")), StepCompensated)
    failed = build_reply(CMD, Outcome("failed", retryable=True, reason="x"))
    assert isinstance(failed, StepFailed) and failed.retryable
    assert Outcome.from_json('{"kind":"compensated","result":[]}').result == {}
    with pytest.raises(ValueError):
        Outcome.from_json('{"kind":"exploded"}')


def test_reply_id_stays_within_the_cap() -> None:
    assert len(reply_id("x" * 256)) <= 256


def test_check_result() -> None:
    """dict[str, str] or None; other values are stringified; junk is a handler bug."""
    assert check_result(None) == {}
    assert check_result({"n": 3}) == {"n": "3"}
    for bad in ([1], {"": "x"}, {"k" * 65: "x"}, {"k": "v" * 5000}):
        with pytest.raises((TypeError, ValueError)):
            check_result(bad)


def test_classify() -> None:
    """NonRetryableError is final; everything else a handler raises is retryable."""
    assert classify(sdk.NonRetryableError("no")) == (False, "no")
    assert classify(sdk.RetryableError("later")) == (True, "later")
    assert classify(ZeroDivisionError("division by zero")) == (
        True,
        "ZeroDivisionError: division by zero",
    )
    assert classify(RuntimeError()) == (True, "RuntimeError")


def test_infrastructure_errors() -> None:
    """Outages are recognised; a Lua error is not an outage, nor a librdkafka error that is
    the record's own fault or the client's state."""
    assert is_infrastructure(rx.ConnectionError("down"))
    assert is_infrastructure(KafkaConnectionError())
    for code in (RdError._TRANSPORT, RdError._ALL_BROKERS_DOWN, RdError._MSG_TIMED_OUT):
        assert is_infrastructure(KafkaClientError(RdError(code))), code
    assert is_infrastructure(KafkaClientError(RdError(RdError.NOT_LEADER_FOR_PARTITION)))
    for code in (RdError.MSG_SIZE_TOO_LARGE, RdError.INVALID_RECORD, RdError._STATE):
        assert not is_infrastructure(KafkaClientError(RdError(code))), code
    assert is_infrastructure(sdk.InfrastructureError("x"))
    assert not is_infrastructure(rx.ResponseError("ERR script"))
    assert not is_infrastructure(ValueError())


def test_effects_allow_only_single_key_writes() -> None:
    tx = Effects()
    tx.hset("k1", {"a": 1})
    tx.hincrby("k2", "f", -2)
    assert tx.keys == ["k1", "k2"]
    assert tx.ops == [["HSET", 1, "a", "1"], ["HINCRBY", 2, "f", "-2"]]
    with pytest.raises(ValueError):
        tx.call("FLUSHALL", "k")


def test_participant_registration() -> None:
    svc = sdk.Participant("svc")

    @svc.action("A")
    async def a(cmd: sdk.SagaCommand, ctx: sdk.Context) -> None:
        return None

    with pytest.raises(ValueError):
        svc.compensation("A")(a)
    with pytest.raises(ValueError):
        sdk.Participant("bad name:with colon")
    assert svc.handlers["A"].compensation is False
