"""What every dashboard handler gets: the API it runs in (as far as the dashboard uses it), a
query over its Redis client, and the page renderer. `app.Dashboard` adds the routes; the pages
and actions see only this, so no module of the package imports back the one that mounts it."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from redis.asyncio import Redis

from orchestrator.config import OrchestratorSettings
from orchestrator.core.definition import Registry
from orchestrator.engine.keys import Keys
from orchestrator.ops import auth
from orchestrator.ops.query import SagaQuery
from orchestrator.ops.ui import render, session
from schemas.messages import Envelope


class Api(Protocol):
    """The part of `orchestrator.ops.http.HttpApi` the dashboard uses."""

    s: OrchestratorSettings
    tokens: auth.Tokens
    redis: Redis | None
    registry: Registry

    async def send(self, topic: str, msg: Envelope) -> None:
        """Produce one message keyed by its saga id; wait for the broker's acknowledgement."""
        ...


class Context:
    def __init__(self, api: Api) -> None:
        self.api = api

    def query(self) -> SagaQuery:
        assert self.api.redis is not None
        return SagaQuery(self.api.redis, Keys.of(self.api.s), self.api.registry)

    def page(
        self,
        request: web.Request,
        visitor: session.Visitor | None,
        template: str,
        status: int = 200,
        **context: object,
    ) -> web.Response:
        return render.page(
            request, visitor, template, status, tokens_in_use=bool(self.api.tokens), **context
        )

    def error(
        self, request: web.Request, visitor: session.Visitor | None, status: int, message: str
    ) -> web.Response:
        return self.page(request, visitor, "error.html", status, code=status, message=message)
