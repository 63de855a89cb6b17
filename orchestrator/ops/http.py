"""The HTTP API of an orchestrator copy (aiohttp), served when `http_port` is set.

    GET  /api/sagas?state=&type=&olderThan=&stuck=&limit=
    GET  /api/sagas/{id}   and   /api/sagas/{id}/status
    POST /api/sagas/{id}/retry|abort|resume|skip-compensation
    POST /api/sagas/{id}/signals/{name}     body {"data": {...}, "reason": "..."}, both optional
    GET  /metrics  /livez  /readyz
    /ui/...  the web dashboard (orchestrator.ops.ui), with the same tokens and roles
    ...and the routes saga modules add (`HTTP_ROUTES`, a list of `Route`), such as the order
    sample's POST /api/orders.

The API reads the daemon only through `DaemonView` (partitions, lag, counters); it has its own
Redis client and Kafka producer, so it never reaches into the loop's clients.

Writes go through Kafka like every other input (the daemon stays the only writer of saga
state); reads come from Redis. Every error is a JSON body `{"error": "..."}` with a 4xx status,
or a 500 without internals (the exception is logged).

Authentication (`orchestrator.ops.auth`): with a tokens file (`http_tokens_file`) every request
but /livez and /readyz needs `Authorization: Bearer <token>` (401 without a valid one); GET and
HEAD need the role `read`, any other method `operate` (403 when the token's role is lower),
unless a `Route` declares its role. Without tokens nothing is checked, and the API refuses to
listen anywhere but loopback. The file is read at start and again on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from infra import kafka as kafka_factory
from infra import redis as redis_factory
from infra.errors import describe
from orchestrator.config import OrchestratorSettings
from orchestrator.engine.keys import Keys
from orchestrator.engine.sagas import SagaModules
from orchestrator.errors import ConfigError
from orchestrator.ops import InputError, OpsError, auth, intervene, kafka, signals, validate
from orchestrator.ops.query import SagaQuery
from orchestrator.ops.ui import Dashboard
from orchestrator.telemetry.metrics import STUCK_COUNT_CAP, Gauges, Metrics
from schemas.messages import Envelope

log = logging.getLogger("orchestrator.ops.http")
MAX_BODY_BYTES = 1_048_576
#: how long a probe or a scrape waits for one Redis read: a slow Redis must not hang them
PING_TIMEOUT_S, SCRAPE_READ_TIMEOUT_S = 1.0, 2.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER = web.RequestKey("caller", auth.Caller)


class DaemonView(Protocol):
    """What the API may know of the daemon it runs beside (the daemon satisfies it)."""

    metrics: Metrics

    def partitions(self) -> list[tuple[str, int]]:
        """The partitions this copy owns now."""
        ...

    async def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Per owned partition: the high watermark minus this copy's position."""
        ...

    def problems(self) -> list[str]:
        """What keeps the daemon from working now, one line each: a Redis or Kafka failure it
        keeps retrying ("redis: OOM command not allowed... (since 12s)"), a stalled relay."""
        ...


@dataclass(frozen=True)
class Route:
    """A route a saga module adds: `handler(request, api)` returns the response. With tokens
    configured it needs `role`, by default `read` for GET and HEAD and `operate` otherwise."""

    method: str
    path: str
    handler: Callable[[web.Request, HttpApi], Awaitable[web.StreamResponse]]
    role: auth.Role | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in auth.ROLES:
            raise ConfigError(f"route {self.method} {self.path}: role must be one of {auth.ROLES}")


def caller(request: web.Request) -> auth.Caller | None:
    """Who sent the request, by its token; None when the API runs without tokens."""
    return request.get(CALLER)


_ACTIONS: dict[str, intervene.Action] = {
    "retry": "retry",
    "abort": "abort",
    "resume": "resume",
    "skip-compensation": "skip_compensation",
}


def json_response(status: int, doc: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _error(status: int, message: str, www_authenticate: str = "") -> web.Response:
    response = json_response(status, {"error": message})
    if www_authenticate:
        response.headers["WWW-Authenticate"] = www_authenticate
    return response


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
    def __init__(
        self,
        settings: OrchestratorSettings,
        sagas: SagaModules,
        daemon: DaemonView,
        redis: Redis | None = None,
    ) -> None:
        """`redis`: a client to use instead of building one (tests); the caller closes it.
        Reads the tokens file: `ConfigError` when it is unusable, or when there are no tokens
        and `http_host` is not loopback."""
        self.s = settings
        self.tokens = auth.for_api(settings.http_tokens_file, settings.http_host)
        self.registry = sagas.registry
        self.daemon = daemon
        self.runner: web.AppRunner | None = None
        self.redis: Redis | None = redis
        self._own_redis = redis is None
        self.producer: AIOKafkaProducer | None = None
        self._producer_started = False
        self.app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[_errors, self._authenticate]
        )
        self._declared: dict[web.AbstractRoute, auth.Role] = {}
        for route in sagas.http_routes:
            added = self.app.router.add_route(route.method, route.path, self._plugin(route))
            if route.role is not None:
                self._declared[added] = route.role
        self.app.router.add_get("/api/sagas", self.list_sagas)
        self.app.router.add_get("/api/sagas/{id}", self.get_saga)
        self.app.router.add_get("/api/sagas/{id}/status", self.get_saga)
        self.app.router.add_post(
            "/api/sagas/{id}/{action:retry|abort|resume|skip-compensation}", self.post_action
        )
        self.app.router.add_post("/api/sagas/{id}/signals/{name}", self.post_signal)
        self.app.router.add_get("/metrics", self.metrics)
        self._open = {
            self.app.router.add_get("/livez", self.livez).resource,
            self.app.router.add_get("/readyz", self.readyz).resource,
        }
        # the dashboard checks the same tokens itself (a login cookie or the header; HTML errors)
        self._open |= Dashboard(self).mount(self.app.router)

    def _plugin(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await route.handler(request, self)

        return handle

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401 or 403 before the handler runs, when tokens are configured; probes pass."""
        route = request.match_info.route
        if not self.tokens or route.resource in self._open:
            return await handler(request)
        where = f"{request.method} {request.rel_url.raw_path}"  # still %-encoded: one log line
        try:
            who = self.tokens.identify(request.headers.get("Authorization"))
        except auth.Unauthenticated as exc:
            log.info("http: 401 for %s from %s: %s", where, request.remote, exc)
            challenge = 'Bearer realm="saga"'
            if "Authorization" in request.headers:
                challenge += ', error="invalid_token"'
            return _error(401, str(exc), challenge)
        need = self._declared.get(route) or auth.role_for(request.method)
        if not who.may(need):
            log.warning("http: 403 for %s by token %s (role %s)", where, who.name, who.role)
            message = f"token {who.name!r} has the role {who.role}; {where} needs {need}"
            return _error(403, message, 'Bearer realm="saga", error="insufficient_scope"')
        request[CALLER] = who
        return await handler(request)

    def reload_tokens(self) -> None:
        """Read the tokens file again (on SIGHUP). An unusable file, or one without tokens
        when tokens are in use, is logged and changes nothing."""
        try:
            tokens = auth.for_api(self.s.http_tokens_file, self.s.http_host)
        except ConfigError as exc:
            log.error("http tokens not reloaded: %s", exc)
            return
        if self.tokens and not tokens:
            log.error("http tokens not reloaded: the file has none (that would open the API)")
            return
        self.tokens = tokens
        log.info("http tokens reloaded: %d tokens", len(tokens))

    async def start(self) -> None:
        if self.redis is None:
            self.redis = redis_factory.client(self.s)
        # started lazily by the first write: the API serves reads while Kafka is away
        self.producer = kafka_factory.producer(self.s)
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.s.http_host, self.s.http_port)
        await site.start()
        if self.s.http_tokens_file:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_tokens)
        auth_note = f"{len(self.tokens)} tokens" if self.tokens else "no tokens: loopback only"
        log.info("http api listening on %s:%s (%s)", self.s.http_host, self.s.http_port, auth_note)

    async def stop(self) -> None:
        if self.s.http_tokens_file:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.producer is not None and self._producer_started:
            await self.producer.stop()
        if self.redis is not None and self._own_redis:
            await self.redis.aclose()

    def _query(self) -> SagaQuery:
        assert self.redis is not None
        return SagaQuery(self.redis, Keys.of(self.s), self.registry)

    async def body(self, request: web.Request, required: bool) -> dict[str, Any]:
        if not request.can_read_body:
            if required:
                raise InputError("a JSON body is required")
            return {}
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(reason="Content-Type must be application/json")
        return validate.json_object(await request.read(), "body")

    # ---- writes ----
    async def post_action(self, request: web.Request) -> web.Response:
        """The operator recorded in the saga history is the token's name when tokens are
        configured: an `operator` in the body is then ignored. Without tokens (loopback only)
        it is the body's `operator`, default "http"."""
        sid = validate.saga_id(request.match_info["id"])
        action = _ACTIONS[request.match_info["action"]]
        body = await self.body(request, required=False)
        step, reason, operator = body.get("step"), body.get("reason", ""), body.get("operator")
        if not all(isinstance(v, str | None) for v in (step, reason, operator)):
            raise InputError("step, reason and operator must be strings")
        who = caller(request)
        operator = who.name if who else operator or "http"
        status = await self._query().status(sid)
        msg = intervene.command(status, action, step=step, reason=reason or "", operator=operator)
        await self.send(self.s.events_topic, msg)
        return json_response(202, {"sagaId": sid, "action": action, "messageId": msg.message_id})

    async def post_signal(self, request: web.Request) -> web.Response:
        """A signal for a saga waiting for it: 202 when sent, 404 for an unknown saga, 409
        with the reason when the saga does not wait for it (`"force": true` sends it anyway;
        the daemon records the refusal). The sender is the token's name, as for actions."""
        sid = validate.saga_id(request.match_info["id"])
        sig = signals.name(request.match_info["name"])
        body = await self.body(request, required=False)
        unknown = sorted(body.keys() - {"data", "reason", "operator", "force"})
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(unknown)[:80]}: data, reason, force")
        reason, operator, force = body.get("reason", ""), body.get("operator"), body.get("force")
        if not isinstance(reason, str) or not isinstance(operator, str | None):
            raise InputError("reason and operator must be strings")
        if not isinstance(force, bool | None):
            raise InputError("force must be true or false")
        doc = signals.data(body.get("data", {}), reason)
        who = caller(request)
        sender = who.name if who else operator or "http"
        t = await signals.target(self._query(), sid)
        why = await signals.refusal(self._query(), t, sig)
        if why and not force:
            raise signals.refused(t, sig, why)
        msg = signals.message(t.status, sig, doc, sender)
        await self.send(self.s.events_topic, msg)
        link = f"/api/sagas/{sid}"
        response = json_response(
            202,
            {"sagaId": sid, "signal": sig, "messageId": msg.message_id, "status": link}
            | ({"refused": why} if why else {}),
        )
        response.headers["Location"] = link
        return response

    async def send(self, topic: str, msg: Envelope) -> None:
        """Produce one message keyed by its saga id and wait for the broker's acknowledgement."""
        assert self.producer is not None
        if not self._producer_started:
            await self.producer.start()
            self._producer_started = True
        await kafka.send(self.producer, topic, msg, self.s.output_format)

    # ---- reads ----
    async def get_saga(self, request: web.Request) -> web.Response:
        sid = validate.saga_id(request.match_info["id"])
        return json_response(200, (await self._query().status(sid)).to_json())

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
        return json_response(200, {"sagas": [i.to_json() for i in items]})

    # ---- operations ----
    async def livez(self, request: web.Request) -> web.Response:
        return json_response(200, {"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = await self.readiness()
        if problems:
            return json_response(503, {"status": "not ready", "problems": problems})
        return json_response(200, {"status": "ready", "partitions": len(self.daemon.partitions())})

    async def readiness(self) -> list[str]:
        """What keeps this copy from being ready, one line each; empty when it is ready.
        /readyz and /metrics' `saga_ready` both come from here, so they cannot disagree."""
        problems = []
        if not self.daemon.partitions():
            problems.append("no partitions assigned")
        if not await self._redis_answers():
            problems.append("redis does not answer")
        return problems + self.daemon.problems()

    async def _redis_answers(self) -> bool:
        try:
            assert self.redis is not None
            return bool(await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT_S))
        except Exception:
            return False

    async def metrics(self, request: web.Request) -> web.Response:
        """The system-wide gauges are read from Redis now; one that did not answer in time is
        left out (and `saga_redis_up` is 0) rather than shown as a 0 that hides the failure."""
        # a partition number counts once though the copy may own it in both input topics
        g = Gauges(assigned_partitions=len({p for _, p in self.daemon.partitions()}))
        g.ready = not await self.readiness()
        try:
            assert self.redis is not None
            q = self._query()
            g.sagas_by_state = await asyncio.wait_for(q.counts_by_state(), SCRAPE_READ_TIMEOUT_S)
            depth = q.outbox_depth()  # every shard's
            g.outbox_depth = await asyncio.wait_for(depth, SCRAPE_READ_TIMEOUT_S)
            # the same question as `saga stuck`, stopped at the cap so a scrape stays cheap
            stuck = q.stuck(int(self.s.stuck_after_s * 1000), STUCK_COUNT_CAP)
            g.sagas_stuck = len(await asyncio.wait_for(stuck, SCRAPE_READ_TIMEOUT_S))
        except Exception as exc:
            log.warning("metrics: redis did not answer: %s", describe(exc))
            g.redis_up = False
        g.consumer_lag = await self.daemon.consumer_lag()
        return web.Response(
            text=self.daemon.metrics.render(g), content_type="text/plain", charset="utf-8"
        )
