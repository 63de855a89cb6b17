"""What the parts of one worker share: its counters, and its way of waiting out an outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from infra.retry import Backoff, retry
from participants.errors import is_infrastructure

T = TypeVar("T")


@dataclass
class WorkerStats:
    batches: int = 0
    handled: int = 0  # new commands given to the middleware and handler, whatever they did
    replayed: int = 0  # answered from a stored outcome: duplicate, repeat, or refusal
    replies: int = 0
    swallowed: int = 0  # new commands a middleware left without a reply (fault no-reply)
    dead_lettered: int = 0
    skipped: int = 0
    errors: int = 0  # SDK-level failures (a bug); the command got no reply
    commits: int = 0
    infra_retries: int = 0  # waits for Redis or Kafka to come back
    outcomes: dict[str, int] = field(default_factory=dict)


class Infra:
    """Retry an operation while Redis or Kafka is unreachable, with capped exponential backoff
    (`infra.retry`). A stop request ends the wait with `infra.retry.Stopped`: the batch in
    progress is abandoned uncommitted."""

    def __init__(
        self, stop: asyncio.Event, max_backoff_s: float, log: logging.Logger, stats: WorkerStats
    ) -> None:
        self.stop, self.log, self.stats = stop, log, stats
        self.backoff = Backoff(initial_s=0.05, max_s=max_backoff_s)

    async def retry(
        self,
        what: str,
        op: Callable[[], Awaitable[T]],
        backoff: Backoff | None = None,
        retry_on: Callable[[BaseException], bool] = is_infrastructure,
    ) -> T:
        return await retry(
            op,
            what=what,
            log=self.log,
            stop=self.stop,
            backoff=backoff or self.backoff,
            retry_on=retry_on,
            on_retry=self._count,
        )

    def _count(self, exc: BaseException) -> None:
        if is_infrastructure(exc):
            self.stats.infra_retries += 1
