"""W3C trace context for sagas, and optional OpenTelemetry spans.

A saga's `traceparent` (https://www.w3.org/TR/trace-context/) comes from the StartOrder (its
`traceparent` field, else the record's `traceparent` header) or is generated at start. The
orchestrator keeps it in the saga hash, puts it on every command (field and header), and the
participants echo it on their replies; log lines about the saga carry it too.

OpenTelemetry is an optional extra (`pip install saga-orchestrator[otel]`): when the API is
importable, every applied reply becomes a span "saga step <name>" from the command to the reply,
child of the saga's trace, exported by whatever SDK the process configured (for example by
running under `opentelemetry-instrument`). Without it, everything here except the spans works and
the span calls do nothing.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

try:  # optional extra
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised by a test that hides the package
    _otel_trace = None  # type: ignore[assignment]
    TraceContextTextMapPropagator = None  # type: ignore[assignment,misc]


def new_traceparent() -> str:
    """A fresh, sampled traceparent: version 00, random trace id and parent id."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def is_valid_traceparent(value: str | None) -> bool:
    if not value:
        return False
    m = _TRACEPARENT.match(value.strip())
    return bool(m) and set(m.group(1)) != {"0"} and set(m.group(2)) != {"0"}  # type: ignore[union-attr]


def trace_id(traceparent: str) -> str:
    m = _TRACEPARENT.match(traceparent or "")
    return m.group(1) if m else ""


def start_traceparent(from_message: str | None, from_header: str | None) -> str:
    """The traceparent a new saga keeps: the message's, else the header's, else a new one."""
    for candidate in (from_message, from_header):
        if is_valid_traceparent(candidate):
            return str(candidate).strip()
    return new_traceparent()


def log_extra(traceparent: str) -> dict[str, str]:
    """Fields for a log line about a saga, so logs can be joined with traces."""
    return {"trace_id": trace_id(traceparent), "traceparent": traceparent} if traceparent else {}


def otel_available() -> bool:
    return _otel_trace is not None


def record_step_span(
    traceparent: str,
    step: str,
    start_ms: int,
    end_ms: int,
    attributes: dict[str, Any] | None = None,
    tracer: Any = None,
) -> None:
    """Export one span for a step (command sent -> reply applied); a no-op without OpenTelemetry
    or without a valid traceparent. `tracer` defaults to the global provider's."""
    if _otel_trace is None or TraceContextTextMapPropagator is None:
        return
    if not is_valid_traceparent(traceparent):
        return
    ctx = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    tracer = tracer or _otel_trace.get_tracer("saga-orchestrator")
    span = tracer.start_span(
        f"saga step {step}",
        context=ctx,
        start_time=start_ms * 1_000_000,
        attributes={k: str(v) for k, v in (attributes or {}).items()},
    )
    span.end(end_time=max(start_ms, end_ms) * 1_000_000)
