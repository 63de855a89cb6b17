"""W3C traceparent from StartOrder through every command (and, by the participants, every
reply), in the saga hash and the logs; OpenTelemetry spans when installed, a no-op when not."""

from __future__ import annotations

import logging

import orjson
import pytest

from orchestrator.telemetry import tracing
from participants.outcome import Outcome, reply_record
from schemas import codec
from schemas.config import Settings
from schemas.dlq import header
from schemas.messages import SagaCommand
from tests.support.commands import read_commands
from tests.support.kafka import produce
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_e2e import start_order

TP_FIELD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TP_HEADER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_traceparent_format_and_precedence() -> None:
    """New traceparents are valid and distinct; the message's wins over the header's, a broken
    one is replaced."""
    a, b = tracing.new_traceparent(), tracing.new_traceparent()
    assert a != b and tracing.is_valid_traceparent(a)
    assert tracing.trace_id(TP_FIELD) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.start_traceparent(TP_FIELD, TP_HEADER) == TP_FIELD
    assert tracing.start_traceparent(None, TP_HEADER) == TP_HEADER
    assert tracing.start_traceparent("garbage", TP_HEADER) == TP_HEADER
    zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    assert not tracing.is_valid_traceparent(zero)
    generated = tracing.start_traceparent(None, "nope")
    assert tracing.is_valid_traceparent(generated) and generated not in (TP_FIELD, TP_HEADER)
    assert tracing.log_extra("") == {}
    assert tracing.log_extra(TP_FIELD)["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_participants_echo_traceparent_on_replies() -> None:
    """A participant's reply carries the command's traceparent as field and header."""
    cmd = SagaCommand(
        saga_id="s-1",
        participant="inventory",
        command_type="ReserveItems",
        step="reserve_inventory",
        attempt=1,
        traceparent=TP_FIELD,
    )
    _, value, headers = reply_record(cmd, Outcome("completed"), "inventory", "json")
    assert header(headers, "traceparent") == TP_FIELD
    assert codec.decode(value).traceparent == TP_FIELD


def test_span_is_a_no_op_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the otel extra nothing is recorded and nothing fails."""
    monkeypatch.setattr(tracing, "_otel_trace", None)
    assert not tracing.otel_available()
    tracing.record_step_span(TP_FIELD, "reserve_inventory", 1000, 2000)


def test_step_span_is_a_child_of_the_saga_trace() -> None:
    """With OpenTelemetry installed, a step becomes a span in the saga's trace."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    tracing.record_step_span(TP_FIELD, "process_payment", 1_000, 1_250, {"saga.id": "s"}, tracer)
    [span] = exporter.get_finished_spans()
    assert span.name == "saga step process_payment"
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time == 250_000_000


async def test_traceparent_travels_through_every_command(
    settings: Settings, reader: SagaReader, caplog: pytest.LogCaptureFixture
) -> None:
    """Field, header or generated: the saga keeps one traceparent, puts it on every command
    (field and header) and on its log lines."""
    caplog.set_level(logging.INFO, logger="orchestrator")
    with_field = orjson.loads(start_order("tp-field"))
    with_field["traceparent"] = TP_FIELD
    async with ScriptedParticipant(settings), running(settings):
        await produce(settings, settings.commands_topic, [(b"tp-field", orjson.dumps(with_field))])
        await produce(
            settings,
            settings.commands_topic,
            [(b"tp-header", start_order("tp-header"))],
            headers=[("traceparent", TP_HEADER.encode())],
        )
        await produce(settings, settings.commands_topic, [(b"tp-new", start_order("tp-new"))])
        await reader.wait_final(["tp-field", "tp-header", "tp-new"])
        # the starts and the 12 commands (on the participants' own topics, per participant)
        records = await read_commands(settings, 3 + 12, settings.commands_topic)
    saved = {
        sid: (await reader.fields(sid))["traceparent"]
        for sid in ("tp-field", "tp-header", "tp-new")
    }
    assert saved["tp-field"] == TP_FIELD and saved["tp-header"] == TP_HEADER
    assert tracing.is_valid_traceparent(saved["tp-new"])
    commands = [r for r in records if header(r.headers, "saga-message-type") == "SagaCommand"]
    assert len(commands) == 12
    for r in commands:
        msg = codec.decode(r.value)
        assert header(r.headers, "traceparent") == saved[msg.saga_id] == msg.traceparent
    logged = {getattr(rec, "traceparent", None) for rec in caplog.records}
    assert set(saved.values()) <= logged
