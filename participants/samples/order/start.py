"""Starting an order saga from a document typed by a person or posted to the HTTP API."""

from __future__ import annotations

from typing import Any

from orchestrator.ops import InputError
from orchestrator.telemetry.tracing import is_valid_traceparent
from schemas.codec import DecodeError, to_model
from schemas.messages import StartOrder, new_id

#: the discriminator spellings the codec accepts; the API and CLI fill in StartOrder
_TYPE_FIELDS = ("messageType", "message_type", "command", "type")


def start_order(doc: dict[str, Any], traceparent: str | None = None) -> StartOrder:
    """Validate an order (camelCase or snake_case); the saga id is generated when absent.

    A W3C `traceparent` given here (an HTTP header, a flag) is used when the document has none.
    """
    doc = dict(doc)
    kind = next((doc[f] for f in _TYPE_FIELDS if f in doc), None)
    if kind is None:
        doc["messageType"] = "StartOrder"
    elif kind != "StartOrder":
        raise InputError(f"expected a StartOrder, not {str(kind)[:40]!r}")
    if not doc.get("sagaId") and not doc.get("saga_id"):
        doc.pop("saga_id", None)
        doc["sagaId"] = new_id()
    if traceparent and not doc.get("traceparent"):
        if not is_valid_traceparent(traceparent):
            raise InputError(f"invalid traceparent {traceparent[:60]!r}")
        doc["traceparent"] = traceparent
    try:
        msg = to_model(doc)
    except DecodeError as exc:
        raise InputError(exc.reason) from None
    assert isinstance(msg, StartOrder)
    return msg
