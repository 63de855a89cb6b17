"""`POST /api/orders`: the order sample's route on the orchestrator's HTTP API (a saga module's
`HTTP_ROUTES`). It validates the order and produces a StartOrder to the commands topic, like
every other input; the daemon stays the only writer of saga state.

Only `items` is required (the reference document's `{"items":[{"productId":"123","quantity":2}]}`):
the saga id is generated, the customer is optional, and a missing amount is computed from the
sample inventory's prices (400 naming a product without one).

A saga id that already exists is answered 409 with the existing saga's status link, checked in
Redis before producing. Two requests racing with the same new id can both pass the check; the
daemon then starts the saga once and records the second StartOrder as ignored.
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.engine.keys import Keys
from orchestrator.ops.http import HttpApi, Route, json_response
from orchestrator.telemetry.tracing import is_valid_traceparent, new_traceparent
from participants.samples.order.start import start_priced_order


async def post_order(request: web.Request, api: HttpApi) -> web.Response:
    """Start an order saga: 202 with the saga id and where to read its status; 409 when the
    saga id is taken."""
    doc = await api.body(request, required=True)
    header_tp = request.headers.get("traceparent")
    tp = header_tp if is_valid_traceparent(header_tp) else new_traceparent()
    assert api.redis is not None  # set once the API started
    msg = await start_priced_order(doc, api.redis, api.s.key_prefix, tp)
    status = f"/api/sagas/{msg.saga_id}/status"
    # HGET and GET, not EXISTS: the orchestrator's Redis user (deploy/redis-acl.conf) may run
    # them already. A tombstone means the saga ran and its keys expired: the id stays taken.
    keys = Keys.of(api.s)
    if await api.redis.hget(keys.saga(msg.saga_id), "state") is not None:
        return json_response(409, {"error": f"saga {msg.saga_id} already exists", "status": status})
    if await api.redis.get(keys.tombstone(msg.saga_id)) is not None:
        error = f"saga {msg.saga_id} ran before and has expired; its id stays taken"
        return json_response(409, {"error": error, "status": status})
    await api.send(api.s.commands_topic, msg)
    return json_response(
        202,
        {
            "sagaId": msg.saga_id,
            "messageId": msg.message_id,
            "traceparent": msg.traceparent,
            "status": status,
        },
    )


ROUTES = [Route("POST", "/api/orders", post_order)]
