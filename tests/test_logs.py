"""Log lines about a saga carry its id and correlation id, in text or JSON."""

from __future__ import annotations

import logging

import orjson

from orchestrator.telemetry.logs import JsonFormatter, TextFormatter, saga_extra


def _record(msg: str, **extra: str) -> logging.LogRecord:
    record = logging.LogRecord("orchestrator", logging.INFO, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_saga_and_correlation_ids() -> None:
    """SAGA_LOG_FORMAT=json: one JSON object a line with saga_id and correlation_id fields."""
    line = JsonFormatter().format(_record("start: -> started", **saga_extra("order-1", "corr-9")))
    doc = orjson.loads(line)
    assert doc["message"] == "start: -> started"
    assert doc["saga_id"] == "order-1"
    assert doc["correlation_id"] == "corr-9"
    assert doc["level"] == "INFO"


def test_text_lines_carry_saga_and_correlation_ids() -> None:
    """The text format appends key=value pairs; the correlation id defaults to the saga id."""
    line = TextFormatter("%(message)s").format(_record("x", **saga_extra("order-2")))
    assert line == "x saga_id=order-2 correlation_id=order-2"
