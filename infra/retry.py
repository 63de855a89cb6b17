"""The one retry policy: capped exponential backoff that a stop request cuts short.

    result = await retry(op, what="apply to redis", log=log, stop=stop_event,
                         backoff=Backoff(max_s=5), retry_on=is_transient)

Every loop that waits for Redis or Kafka to come back goes through here, so they all log,
count and stop the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from infra.errors import is_transient

T = TypeVar("T")


class Stopped(Exception):
    """A stop was requested while an operation waited to be retried."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0 for the first): the n-th of `delays()`."""
        return min(self.initial_s * self.multiplier ** min(attempt, 64), self.max_s)

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.multiplier, self.max_s)


async def pause(stop: asyncio.Event | None, delay_s: float) -> bool:
    """Sleep `delay_s` unless `stop` is set first; True when a stop was requested."""
    if stop is None:
        await asyncio.sleep(delay_s)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)
        return True
    return False


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    stop: asyncio.Event | None = None,
    backoff: Backoff = Backoff(),
    retry_on: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `op` until it succeeds. An error `retry_on` accepts is logged and retried after the
    next backoff delay; any other error propagates. Raises `Stopped` (from the last error) when
    `stop` is set before the next attempt."""
    for delay in backoff.delays():
        try:
            return await op()
        except Exception as exc:
            if not retry_on(exc):
                raise
            if on_retry is not None:
                on_retry(exc)
            if stop is not None and stop.is_set():
                raise Stopped(what) from exc
            log.warning(
                "%s failed (%s: %s); retrying in %.2fs", what, type(exc).__name__, exc, delay
            )
            if await pause(stop, delay):
                raise Stopped(what) from exc
    raise AssertionError("unreachable: delays() never ends")
