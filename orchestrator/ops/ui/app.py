"""The dashboard's routes on the API's aiohttp application, and the guard every one runs in.

The guard does, for the dashboard's routes, what the API's middleware does for the JSON routes,
with pages instead of JSON bodies: who is calling (`session.identify`: Bearer header or login
cookie, the same tokens), whether their role allows the route (`read` for pages, `operate` for
every POST but the login), the CSRF check on POSTs, errors as HTML pages with the API's status
codes, and the security headers. The API's middleware lets these routes through unchecked
(`HttpApi` mounts them among its open routes) because the guard checks them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, UrlDispatcher
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from orchestrator.ops import OpsError, auth
from orchestrator.ops.ui import actions, pages, render, session
from orchestrator.ops.ui.context import Api, Context

log = logging.getLogger("orchestrator.ops.ui")
Page = Callable[[Context, web.Request, session.Visitor], Awaitable[web.StreamResponse]]
_INFRA = (RedisError, KafkaError, OSError, TimeoutError)
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


class Dashboard(Context):
    """The web dashboard of one `HttpApi`: its tokens, Redis client and producer."""

    def __init__(self, api: Api) -> None:
        super().__init__(api)
        self.static = {p.name: p for p in render.STATIC.iterdir() if p.suffix in _STATIC_TYPES}

    def mount(self, router: UrlDispatcher) -> set[AbstractResource]:
        """Add the dashboard's routes; returns their resources (they check their own auth)."""
        routes: list[tuple[str, str, Page, auth.Role | None]] = [
            ("GET", "/ui", pages.overview, "read"),
            ("GET", "/ui/", pages.to_overview, "read"),
            ("GET", "/ui/partials/overview", pages.overview_partial, "read"),
            ("GET", "/ui/sagas", pages.saga_list, "read"),
            ("GET", "/ui/sagas/{id}", pages.saga, "read"),
            ("GET", "/ui/partials/sagas/{id}", pages.saga_partial, "read"),
            ("GET", "/ui/stuck", pages.stuck, "read"),
            ("GET", "/ui/dlq", pages.dlq_list, "read"),
            ("GET", "/ui/dlq/{pos}", pages.dlq_record, "read"),
            ("POST", "/ui/sagas/{id}/{action}", actions.saga_action, "operate"),
            ("POST", "/ui/dlq/{pos}/replay", actions.dlq_replay, "operate"),
            ("GET", "/ui/login", actions.login_page, None),
            ("POST", "/ui/login", actions.login, None),
            ("POST", "/ui/logout", actions.logout, None),
        ]
        resources = {router.add_get("/ui/static/{name}", self._static).resource}
        for method, path, handler, role in routes:
            resources.add(router.add_route(method, path, self._guard(handler, role)).resource)
        return {r for r in resources if r is not None}

    def _guard(
        self, handler: Page, role: auth.Role | None
    ) -> Callable[..., Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            where = f"{request.method} {request.rel_url.raw_path}"
            try:
                visitor = session.identify(request, self.api.tokens)
            except auth.Unauthenticated as exc:
                if role is not None:
                    log.info("ui: 401 for %s from %s: %s", where, request.remote, exc)
                    return actions.login_form(self, request, None, str(exc), 401)
                # a public route (the login form) for someone not logged in; it checks no role
                csrf, new = session.csrf_token(request)
                visitor = session.Visitor(None, False, csrf, new)
            if role is not None and not visitor.may(role):
                log.warning(
                    "ui: 403 for %s by token %s (role %s)", where, visitor.name, visitor.role
                )
                return self.error(
                    request,
                    visitor,
                    403,
                    f"your token ({visitor.name}) has the role {visitor.role}; this needs {role}",
                )
            try:
                if request.method == "POST":
                    form = await request.post()
                    field = form.get(session.CSRF_FIELD)
                    session.check_post(request, visitor, field if isinstance(field, str) else None)
                response = await handler(self, request, visitor)
            except session.Forbidden as exc:
                log.warning("ui: 403 for %s: %s", where, exc)
                return self.error(request, visitor, 403, str(exc))
            except OpsError as exc:
                return self.error(request, visitor, exc.http_status, exc.message)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                return self.error(request, visitor, exc.status, exc.reason)
            except _INFRA as exc:
                log.warning("ui: %s: Kafka or Redis did not answer: %r", where, exc)
                message = f"Kafka or Redis did not answer ({type(exc).__name__}); try again"
                return self.error(request, visitor, 503, message)
            except Exception:
                log.exception("ui: %s failed", where)
                return self.error(request, visitor, 500, "internal error (see the server's log)")
            render.secure(response, request, visitor)
            return response

        return handle

    async def _static(self, request: web.Request) -> web.StreamResponse:
        """The stylesheet and script (no auth: the login page needs them; nothing secret)."""
        path = self.static.get(request.match_info["name"])
        if path is None:
            return self.error(request, None, 404, "no such file")
        response = web.Response(body=path.read_bytes(), content_type=_STATIC_TYPES[path.suffix])
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "max-age=300"
        return response
