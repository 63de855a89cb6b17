"""`POST /api/orders`: the order sample's route on the orchestrator's HTTP API (a saga module's
`HTTP_ROUTES`). It validates the order and produces a StartOrder to the commands topic, like
every other input; the daemon stays the only writer of saga state."""

from __future__ import annotations

from aiohttp import web

from orchestrator.ops.http import HttpApi, Route, json_response
from orchestrator.telemetry.tracing import is_valid_traceparent, new_traceparent
from participants.samples.order.start import start_order


async def post_order(request: web.Request, api: HttpApi) -> web.Response:
    """Start an order saga: 202 with the saga id and where to read its status."""
    doc = await api.body(request, required=True)
    header_tp = request.headers.get("traceparent")
    tp = header_tp if is_valid_traceparent(header_tp) else new_traceparent()
    msg = start_order(doc, tp)
    await api.send(api.s.commands_topic, msg)
    return json_response(
        202,
        {
            "sagaId": msg.saga_id,
            "messageId": msg.message_id,
            "traceparent": msg.traceparent,
            "status": f"/api/sagas/{msg.saga_id}/status",
        },
    )


ROUTES = [Route("POST", "/api/orders", post_order)]
