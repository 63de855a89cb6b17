"""The HTTP API of an orchestrator copy (aiohttp), served when `http_port` is set.

    POST /api/orders                         start an order saga (202 + saga id)
    GET  /api/sagas?state=&type=&olderThan=&stuck=&limit=
    GET  /api/sagas/{id}   and   /api/sagas/{id}/status
    POST /api/sagas/{id}/retry|abort|resume|skip-compensation
    GET  /metrics  /livez  /readyz

Writes go through Kafka like every other input (the daemon stays the only writer of saga
state); reads come from Redis. Every error is a JSON body `{"error": "..."}` with a 4xx status,
or a 500 without internals (the exception is logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from orchestrator.keys import Keys
from orchestrator.metrics import Gauges
from orchestrator.ops import InputError, OpsError, intervene, kafka, validate
from orchestrator.ops.orders import start_order
from orchestrator.ops.query import SagaQuery
from orchestrator.tracing import is_valid_traceparent, new_traceparent

if TYPE_CHECKING:
    from orchestrator.daemon import Orchestrator

log = logging.getLogger("orchestrator.http")
MAX_BODY_BYTES = 1_048_576
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ACTIONS: dict[str, intervene.Action] = {
    "retry": "retry",
    "abort": "abort",
    "resume": "resume",
    "skip-compensation": "skip_compensation",
}


def _json(status: int, doc: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message})


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OpsError as exc:
        return _error(exc.http_status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error")


class HttpApi:
    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch
        self.s = orch.s
        self.runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors])
        self.app.router.add_post("/api/orders", self.post_order)
        self.app.router.add_get("/api/sagas", self.list_sagas)
        self.app.router.add_get("/api/sagas/{id}", self.get_saga)
        self.app.router.add_get("/api/sagas/{id}/status", self.get_saga)
        self.app.router.add_post(
            "/api/sagas/{id}/{action:retry|abort|resume|skip-compensation}", self.post_action
        )
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/livez", self.livez)
        self.app.router.add_get("/readyz", self.readyz)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.s.http_host, self.s.http_port)
        await site.start()
        log.info("http api listening on %s:%s", self.s.http_host, self.s.http_port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _query(self) -> SagaQuery:
        assert self.orch.redis is not None
        return SagaQuery(self.orch.redis, Keys(self.s.key_prefix), self.orch.registry)

    async def _body(self, request: web.Request, required: bool) -> dict[str, Any]:
        if not request.can_read_body:
            if required:
                raise InputError("a JSON body is required")
            return {}
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(reason="Content-Type must be application/json")
        return validate.json_object(await request.read(), "body")

    # ---- writes ----
    async def post_order(self, request: web.Request) -> web.Response:
        doc = await self._body(request, required=True)
        header_tp = request.headers.get("traceparent")
        tp = header_tp if is_valid_traceparent(header_tp) else new_traceparent()
        msg = start_order(doc, tp)
        await self._send(self.s.commands_topic, msg)
        return _json(
            202,
            {
                "sagaId": msg.saga_id,
                "messageId": msg.message_id,
                "traceparent": msg.traceparent,
                "status": f"/api/sagas/{msg.saga_id}/status",
            },
        )

    async def post_action(self, request: web.Request) -> web.Response:
        sid = validate.saga_id(request.match_info["id"])
        action = _ACTIONS[request.match_info["action"]]
        body = await self._body(request, required=False)
        step, reason, operator = body.get("step"), body.get("reason", ""), body.get("operator")
        if not all(isinstance(v, str | None) for v in (step, reason, operator)):
            raise InputError("step, reason and operator must be strings")
        status = await self._query().status(sid)
        msg = intervene.command(
            status, action, step=step, reason=reason or "", operator=operator or "http"
        )
        await self._send(self.s.events_topic, msg)
        return _json(202, {"sagaId": sid, "action": action, "messageId": msg.message_id})

    async def _send(self, topic: str, msg: Any) -> None:
        assert self.orch.producer is not None
        await kafka.send(self.orch.producer, topic, msg, self.s.output_format)

    # ---- reads ----
    async def get_saga(self, request: web.Request) -> web.Response:
        sid = validate.saga_id(request.match_info["id"])
        return _json(200, (await self._query().status(sid)).to_json())

    async def list_sagas(self, request: web.Request) -> web.Response:
        q = request.query
        older = validate.duration_ms(q["olderThan"]) if "olderThan" in q else 0
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise InputError("limit must be a whole number") from None
        if not 1 <= limit <= 10_000:
            raise InputError("limit must be between 1 and 10000")
        if q.get("stuck") in ("1", "true"):
            items = await self._query().stuck(older or 600_000, limit)
        else:
            states = [validate.state(s) for s in q.getall("state", [])] or None
            items = await self._query().find(states, q.get("type"), older, limit)
        return _json(200, {"sagas": [i.to_json() for i in items]})

    # ---- operations ----
    async def livez(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = []
        if not self.orch.assigned:
            problems.append("no partitions assigned")
        if not await self._redis_answers():
            problems.append("redis does not answer")
        if problems:
            return _json(503, {"status": "not ready", "problems": problems})
        return _json(200, {"status": "ready", "partitions": len(self.orch.assigned)})

    async def _redis_answers(self) -> bool:
        try:
            assert self.orch.redis is not None
            return bool(await asyncio.wait_for(self.orch.redis.ping(), 1.0))
        except Exception:
            return False

    async def metrics(self, request: web.Request) -> web.Response:
        g = Gauges(assigned_partitions=len(self.orch.assigned))
        try:
            assert self.orch.store is not None
            g.sagas_by_state = await asyncio.wait_for(self._query().counts_by_state(), 2.0)
            g.outbox_depth = await asyncio.wait_for(self.orch.store.outbox_depth(), 2.0)
        except Exception as exc:
            log.warning("metrics: redis did not answer: %s", exc)
            g.redis_up = False
        g.consumer_lag = await self._lag()
        return web.Response(
            text=self.orch.metrics.render(g), content_type="text/plain", charset="utf-8"
        )

    async def _lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: the broker's high watermark minus this copy's position."""
        c = self.orch.consumer
        lag: dict[tuple[str, int], int] = {}
        if c is None:
            return lag
        for tp in list(self.orch.assigned):
            try:
                high = c.highwater(tp)
                if high is None:
                    continue
                pos = await asyncio.wait_for(c.position(tp), 1.0)
                lag[(tp.topic, tp.partition)] = max(0, high - pos)
            except Exception:  # revoked meanwhile, or no position yet
                continue
        return lag
