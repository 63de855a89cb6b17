"""`POST /api/test/fail-next-request` on a sample worker's own HTTP port: the reference document's

    curl -X POST http://localhost:8001/api/test/fail-next-request

It makes that worker's next new command fail non-retryably (so the next order compensates),
through the same Redis hash as `saga participant fail-next NAME --non-retryable`
(`inject.fail_next`): every replica of the worker shares it, and the `FaultInjection` middleware
takes the unit. `?count=N` fails the next N commands.

Off unless `SAGA_PARTICIPANT_HTTP_PORT` is set (the order sample's `OrderConfig`). The SDK knows
nothing of it: the sample's entry points (`build()`) start it beside the worker, in a thread with
its own event loop and Redis client, because the SDK's worker loop has no start-up hook and
needs none. It listens on `SAGA_PARTICIPANT_HTTP_HOST` (127.0.0.1 by default) without any
authentication: a test endpoint, not for production.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from redis.asyncio import Redis

from infra import redis as redis_factory
from participants.keys import SdkKeys
from participants.samples.faults import inject
from schemas.config import Settings

PATH = "/api/test/fail-next-request"
log = logging.getLogger("participants.samples.faults.http")


def _json(status: int, doc: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def application(settings: Settings, participant: str, redis: Redis) -> web.Application:
    """The app: one route, answering for `participant`."""
    keys = SdkKeys(settings.key_prefix, participant)

    async def fail_next_request(request: web.Request) -> web.Response:
        text = request.query.get("count", "1")
        if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
            return _json(400, {"error": "count must be a whole number from 1 to 1000000"})
        await inject.fail_next(redis, keys, int(text), retryable=False)
        log.warning("%s: the next %s command(s) will fail (fail-next-request)", participant, text)
        return _json(200, {"participant": participant, "failNext": int(text), "retryable": False})

    app = web.Application()
    app.router.add_post(PATH, fail_next_request)
    return app


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, participant: str, host: str, port: int
) -> AsyncIterator[None]:
    """The endpoint, in this event loop, for the duration of the block."""
    async with redis_factory.connected(settings, decode=True) as redis:
        runner = web.AppRunner(application(settings, participant, redis), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("%s: POST http://%s:%s%s", participant, host, port, PATH)
            yield
        finally:
            await runner.cleanup()


class Beside:
    """The endpoint in a daemon thread beside a worker (started before the worker's loop)."""

    def __init__(self, settings: Settings, participant: str, host: str, port: int) -> None:
        self.settings, self.participant, self.host, self.port = settings, participant, host, port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Listening once this returns; the bind error (port taken...) is raised here."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._main(ready),),
            name=f"fail-next-request-{self.participant}",
            daemon=True,
        )
        self._thread.start()
        ready.result(timeout_s)
        atexit.register(self.stop)

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with serving(self.settings, self.participant, self.host, self.port):
                ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            if ready.done():
                raise
            ready.set_exception(exc)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)


_started: dict[tuple[str, int], Beside] = {}
_lock = threading.Lock()


def start_beside(settings: Settings, participant: str, host: str, port: int) -> Beside:
    """Start the endpoint for `participant` once per process and port (building a worker twice
    reuses it)."""
    with _lock:
        server = _started.get((participant, port))
        if server is None:
            server = Beside(settings, participant, host, port)
            server.start()
            _started[(participant, port)] = server
        return server
