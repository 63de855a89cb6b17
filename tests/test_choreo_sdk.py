"""The SDK's reactions to domain events (`Participant.on`): registration checks, routing of the
event topic, retries in place, the published events, and which topics a worker reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import confluent_kafka as ck
import orjson
import pytest
from redis.asyncio import Redis

from infra import kafka
from infra.rdkafka import Record
from participants.config import WorkerOptions
from participants.outcome import Outcome
from participants.reactions import Delivery, Skipped, emitted, route_event
from participants.sdk import Context, NonRetryableError, Participant, RetryableError, SagaCommand
from participants.testing import FAST, Raw, TopicReader, produce, running
from participants.worker import Worker
from schemas.choreography import DomainEvent, decode_event, encode_event
from schemas.config import Settings
from schemas.wire import DecodeError


def record(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Any:
    """A record of topic `ev`, partition 1, offset 7."""
    msg = ck.Message(topic="ev", partition=1, offset=7, value=value, headers=headers or [])
    return Record(msg)


def svc(topic: str = "ev") -> Participant:
    p = Participant("demo", events_topic=topic)

    @p.on("Asked", step="work", emits="Done", fails="Refused")
    async def work(event: SagaCommand, ctx: Context) -> dict[str, str]:
        return {"n": "1"}

    return p


def test_on_checks_its_arguments() -> None:
    """A reaction needs an events topic, valid names, and one handler per event type."""
    with pytest.raises(ValueError, match=r"set Participant\(events_topic=\.\.\.\)"):
        Participant("x").on("Asked", step="work")
    p = svc()
    with pytest.raises(ValueError, match="already has a handler for Asked"):
        p.on("Asked", step="other")
    for kwargs in (
        {"step": "has space"},
        {"step": "s", "emits": "no way"},
        {"step": "s", "fails": "1bad"},
        {"step": "s", "max_attempts": 0},
    ):
        with pytest.raises(ValueError, match="must"):
            p.on("Other", **kwargs)
    assert not p.takes_commands and svc().reactions["Asked"].max_attempts == 3


def test_routing_of_the_event_topic() -> None:
    """Another message type is skipped without decoding; poison is skipped as poison (the
    tracker dead-letters it); an event nobody here reacts to is skipped; the rest delivered,
    known by its id, else its header, else its log position."""
    p = svc()
    other = route_event(record(b"{}", [("saga-message-type", b"SagaCommand")]), p, 10_000)
    assert other == Skipped("a SagaCommand, not a domain event")
    bad = route_event(record(b"{nope"), p, 10_000)
    assert isinstance(bad, Skipped) and bad.poison and "invalid_json" in bad.why
    assert route_event(record(b'{"type":"Else","sagaId":"s"}'), p, 10_000) == Skipped(
        "no reaction to Else"
    )
    d = route_event(record(b'{"type":"Asked","sagaId":"s"}'), p, 10_000)
    assert isinstance(d, Delivery) and d.event_id == "@ev/1/7"
    h = route_event(record(b'{"type":"Asked","sagaId":"s"}', [("saga-message-id", b"m")]), p, 10)
    assert isinstance(h, Skipped) and "too_large" in h.why
    h = route_event(record(b'{"type":"Asked","sagaId":"s"}', [("saga-message-id", b"m")]), p, 999)
    assert isinstance(h, Delivery) and h.event_id == "m"


def test_the_published_event_is_a_function_of_the_event_and_the_outcome() -> None:
    """Success adds the result to the data, failure the reason; the id is (saga, step,
    direction, type), the time the outcome's: a re-publication is the same bytes."""
    p = svc()
    event = decode_event(b'{"type":"Asked","sagaId":"s","eventId":"e","data":{"a":1}}')
    d = Delivery(event, "e", p.reactions["Asked"])
    done = Outcome("completed", {"n": "1"}, time_ms=1_700_000_000_000)
    first, again = emitted(d, done, "demo"), emitted(d, done, "demo")
    assert first is not None and again is not None
    assert encode_event(first) == encode_event(again)
    assert (first.event_id, first.event_type, first.data) == (
        "s:work:action:Done",
        "Done",
        {"a": 1, "n": "1"},
    )
    assert (first.causation_id, first.source) == ("e", "demo")
    failed = emitted(d, Outcome("failed", reason="no"), "demo")
    assert failed is not None and failed.event_type == "Refused"
    assert failed.data == {"a": 1, "reason": "no"}
    q = Participant("q", events_topic="ev")
    q.on("Asked", step="w")(p.handlers["Asked"].handler)
    assert emitted(Delivery(event, "e", q.reactions["Asked"]), done, "q") is None


@pytest.mark.parametrize(
    ("mode", "own", "plain_own"),
    [("per-participant", "cmds.demo", "cmds.plain"), ("single", "cmds", "cmds")],
)
def test_a_worker_reads_the_topics_its_handlers_need(mode: str, own: str, plain_own: str) -> None:
    """Only reactions: the event topic alone. Commands too: both. Neither: its command topic
    (the participant's own, or the one commands topic in single mode)."""
    settings = Settings(commands_topic="cmds", command_topics=mode)
    p = svc("evts")
    assert Worker(settings, p, options=_opts(), stop=asyncio.Event())._topics() == ["evts"]

    @p.action("Do")
    async def do(cmd: SagaCommand, ctx: Context) -> None:
        return None

    assert Worker(settings, p, options=_opts(), stop=asyncio.Event())._topics() == [own, "evts"]
    plain = Participant("plain")
    assert Worker(settings, plain, options=_opts(), stop=asyncio.Event())._topics() == [plain_own]


def _opts() -> WorkerOptions:
    return FAST


@pytest.fixture
async def topic(settings: Settings) -> AsyncIterator[str]:
    name = settings.commands_topic.removesuffix("-commands") + "-ev"
    kafka.create_topics(settings, [name], 3)
    yield name
    kafka.delete_topics(settings, [name])


async def test_a_retryable_failure_is_tried_again_in_place(settings: Settings, topic: str) -> None:
    """No orchestrator retries an event: a RetryableError runs the handler again (a new
    attempt under the guard) until it succeeds or the attempts run out; then the failure event
    carries the last reason. Effects queued by a failed attempt are not applied."""
    p = Participant("flaky", events_topic=topic)
    calls: list[tuple[str, int]] = []

    @p.on("Asked", step="work", emits="Done", fails="GaveUp", max_attempts=3)
    async def work(event: SagaCommand, ctx: Context) -> dict[str, str]:
        calls.append((event.saga_id, event.attempt))
        ctx.tx.hincrby(ctx.key("tries"), event.saga_id)
        if event.saga_id == "never" or event.attempt < 2:
            raise RetryableError(f"busy at attempt {event.attempt}")
        return {"attempt": str(event.attempt)}

    @p.on("Bad", step="bad", fails="GaveUp")
    async def bad(event: SagaCommand, ctx: Context) -> None:
        raise NonRetryableError("never")

    records = [
        Raw(b'{"type":"Asked","sagaId":"soon","eventId":"a"}', b"soon"),
        Raw(b'{"type":"Asked","sagaId":"never","eventId":"b"}', b"never"),
        Raw(b'{"type":"Bad","sagaId":"once","eventId":"c"}', b"once"),
    ]
    async with TopicReader(settings, topic) as reader, running(settings, p) as worker:
        await produce(settings, records, topic=topic)

        def published(_: Any) -> list[DomainEvent]:
            out = []
            for r in reader.seen:
                doc = orjson.loads(r.value)
                if doc.get("source") == "flaky":
                    out.append(decode_event(r.value))
            return out

        await reader.until(lambda seen: len(published(seen)) == 3, timeout_s=60)
        assert worker.stats.errors == 0
    by_saga = {e.saga_id: e for e in published(None)}
    assert (by_saga["soon"].event_type, by_saga["soon"].data) == ("Done", {"attempt": "2"})
    assert by_saga["never"].event_type == "GaveUp"
    assert by_saga["never"].data["reason"] == "busy at attempt 3"
    assert by_saga["once"].event_type == "GaveUp" and by_saga["once"].data["reason"] == "never"
    assert sorted(calls) == [("never", 1), ("never", 2), ("never", 3), ("soon", 1), ("soon", 2)]
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        tries = await redis.hgetall(f"{settings.key_prefix}:flaky:tries")
    finally:
        await redis.aclose()
    assert tries == {"soon": "1"}  # only the attempt that succeeded applied its writes


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        (None, "empty", "the record has no value"),
        (b"", "empty", "the record has no value"),
        (b"x" * 2000, "too_large", "value of 2000 bytes exceeds the cap of 1024"),
        (b"\x00\x00\x00\x00\x01", "undecodable", "an event is a JSON object"),
        (b"{nope", "invalid_json", "unexpected character"),
        (b'"text"', "undecodable", "an event is a JSON object"),
        (b"[1]", "invalid_json", "an event is a JSON object, not an array"),
        (b'{"sagaId":"s"}', "invalid", "event missing type"),
        (b'{"type":"A"}', "invalid", "A missing sagaId"),
        (b'{"type":"A","sagaId":"a b"}', "invalid", "A invalid sagaId"),
        (b'{"type":"A","sagaId":"s","extra":1}', "invalid", "A invalid extra"),
        (b'{"type":"has space","sagaId":"s"}', "invalid", "has space invalid type"),
        (b'{"type":"A","sagaId":"s","data":[1]}', "invalid", "A invalid data"),
        (
            b'{"type":"A","sagaId":"s","data":' + b'{"a":' * 40 + b"1" + b"}" * 41,
            "invalid",
            "deeper",
        ),
    ],
)
def test_hostile_event_records_are_refused_with_a_reason(
    value: bytes | None, kind: str, reason: str
) -> None:
    """Every record that is not an event is a DecodeError with a kind and a readable reason."""
    with pytest.raises(DecodeError) as caught:
        decode_event(value, 1024)
    assert caught.value.kind == kind and reason in caught.value.reason
