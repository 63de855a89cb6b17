"""What a handler gets besides the command: Redis, its key space, a logger, and two ways to make
its effect atomic with the SDK's bookkeeping (`ctx.tx` for plain writes, `ctx.atomic` for Lua);
and what a middleware gets once per batch (`BatchScope`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from participants.errors import NonRetryableError, RetryableError
from participants.keys import domain_key, tagged
from participants.outcome import Outcome
from participants.scripts import GuardedScript
from schemas.config import Settings
from schemas.messages import SagaCommand

#: Single-key write commands a handler may queue on `ctx.tx`.
ALLOWED_WRITES = frozenset(
    {
        "HSET", "HSETNX", "HINCRBY", "HINCRBYFLOAT", "HDEL",
        "RPUSH", "LPUSH", "LTRIM",
        "SET", "DEL", "INCRBY", "INCRBYFLOAT", "EXPIRE", "PEXPIRE",
        "SADD", "SREM", "ZADD", "ZREM", "ZINCRBY", "XADD",
    }
)  # fmt: skip

Scalar = str | int | float


class Effects:
    """Writes a handler queues instead of sending them. The SDK applies them in the same Lua
    call that stores the command's outcome, so they happen exactly once per (saga, step): a
    crash before that call loses them with the outcome (the retry runs the handler again), a
    crash after it leaves both, and a later delivery finds the outcome and writes nothing."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.ops: list[list[Scalar]] = []

    def call(self, command: str, key: str, *args: Scalar) -> None:
        name = command.upper()
        if name not in ALLOWED_WRITES:
            raise ValueError(
                f"{command} cannot be queued on ctx.tx (allowed: {sorted(ALLOWED_WRITES)})"
            )
        self.keys.append(key)
        # Key indexes are relative to the body's KEYS (1-based in Lua); arguments go as text.
        self.ops.append([name, len(self.keys), *(str(a) for a in args)])

    def hset(self, key: str, mapping: Mapping[str, Scalar]) -> None:
        self.call("HSET", key, *(x for kv in mapping.items() for x in kv))

    def hincrby(self, key: str, field_: str, amount: int = 1) -> None:
        self.call("HINCRBY", key, field_, amount)

    def rpush(self, key: str, *values: Scalar) -> None:
        self.call("RPUSH", key, *values)

    def set(self, key: str, value: Scalar, ex_s: int | None = None) -> None:
        self.call("SET", key, value, *(("EX", ex_s) if ex_s else ()))

    def copy(self) -> Effects:
        twin = Effects()
        twin.keys, twin.ops = list(self.keys), list(self.ops)
        return twin

    def __bool__(self) -> bool:
        return bool(self.ops)


@dataclass
class BatchScope:
    """One batch as middleware sees it (`Middleware.before_batch`, then `ctx.batch`).

    Per-batch values a middleware computes go in `state`, keyed by the middleware itself
    (`batch.state[self] = ...`), not on the middleware: one middleware instance may serve several
    workers at once (`run_many`, replicas in one process)."""

    participant: str
    settings: Settings
    redis: Redis
    #: The batch's new commands with a handler: those the middleware will see, as far as the
    #: stored records read before the batch tell (a duplicate within the batch is answered alone).
    commands: Sequence[SagaCommand]
    state: dict[object, Any] = field(default_factory=dict)


GuardRunner = Callable[[GuardedScript, Sequence[str], Sequence[Scalar]], Awaitable[Outcome]]


@dataclass
class Context:
    """Per-command context passed to every middleware and handler."""

    participant: str
    settings: Settings
    redis: Redis
    log: logging.LoggerAdapter[Any]
    run_guarded: GuardRunner
    #: The batch this command came in (what the middleware prepared for it in `state`).
    batch: BatchScope
    #: The worker's random source: seeded in tests (`participants.testing.running(seed=...)`).
    rng: random.Random
    tx: Effects = field(default_factory=Effects)
    #: Set once `atomic` stored the outcome; the SDK then replies with it whatever the handler does.
    committed: Outcome | None = None

    def key(self, *parts: str) -> str:
        """A key in this service's own space: `<key_prefix>:<participant>:<parts...>` (on a
        Redis Cluster `<key_prefix>:{<participant>}:<parts...>`, the slot of the SDK's records
        for this command, so `ctx.tx` and `ctx.atomic` may write it; `participants.keys`)."""
        return domain_key(
            self.settings.key_prefix, self.participant, *parts, cluster=tagged(self.redis)
        )

    async def atomic(
        self, script: GuardedScript, keys: Sequence[str], args: Sequence[Scalar]
    ) -> dict[str, str]:
        """Run a Lua body inside the guard: the effect and the stored outcome in one step.
        Returns the step's result; a failure the body reports is raised as a StepError."""
        if self.committed is not None or self.tx:
            raise RuntimeError("ctx.atomic runs once per command and cannot be mixed with ctx.tx")
        outcome = await self.run_guarded(script, keys, args)
        self.committed = outcome
        if outcome.kind == "failed":
            raise (RetryableError if outcome.retryable else NonRetryableError)(outcome.reason)
        return dict(outcome.result)


def command_logger(logger: logging.Logger, cmd: SagaCommand) -> logging.LoggerAdapter[Any]:
    return SagaLogAdapter(
        logger,
        {
            "saga_id": cmd.saga_id,
            "correlation_id": cmd.correlation_id or "-",
            "command_id": cmd.message_id,
        },
    )


class SagaLogAdapter(logging.LoggerAdapter[Any]):
    """Prefixes every line with the saga and correlation ids (and keeps them as record extras
    for JSON log formatters)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return (
            f"saga_id={extra.get('saga_id')} correlation_id={extra.get('correlation_id')} {msg}",
            kwargs,
        )
