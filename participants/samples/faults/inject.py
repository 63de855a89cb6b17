"""Failure injection at run time, per participant, through one Redis hash: an SDK middleware.

`saga participant fail-next payment --count 2` writes `fail_next=2` to
`<prefix>:participant:payment:faults`; every replica of a worker that installs `FaultInjection`
reads the hash once per batch and takes units with an atomic script, so two replicas never
inject the same unit twice. Faults apply to forward actions unless the fault was set with
`--compensations`. They apply to new work only: a duplicate command is answered from its stored
outcome as always, without reaching any middleware.

    svc = Participant("payment", middleware=[FaultInjection()])
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis

from participants.keys import SdkKeys
from participants.sdk import (
    BatchScope,
    CallNext,
    Context,
    Middleware,
    NonRetryableError,
    Outcome,
    RetryableError,
    SagaCommand,
)

#: Take one unit of a counted fault (KEYS[1] the hash, ARGV[1] the field); 1 when taken.
TAKE = resources.files(__package__ or "").joinpath("lua", "fault_take.lua").read_text("utf-8")

FIELDS = (
    "fail_next", "fail_next_retryable", "fail_next_compensations",
    "fail_rate", "fail_rate_retryable", "fail_rate_compensations",
    "latency_ms", "latency_compensations",
    "no_reply", "no_reply_after_effect", "no_reply_compensations",
)  # fmt: skip


@dataclass(frozen=True)
class Injection:
    """What to do to one command."""

    latency_s: float = 0.0
    #: (retryable, reason) of an injected failure.
    fail: tuple[bool, str] | None = None
    #: Send no reply. Without `run_anyway` the command is swallowed whole (never handled).
    no_reply: bool = False
    run_anyway: bool = False


NONE = Injection()


def _applies(faults: dict[str, str], name: str, cmd: SagaCommand) -> bool:
    return not cmd.compensation or faults.get(f"{name}_compensations") == "1"


def _int(faults: dict[str, str], name: str) -> int:
    try:
        return int(faults.get(name) or 0)
    except ValueError:
        return 0


def _float(faults: dict[str, str], name: str) -> float:
    try:
        return float(faults.get(name) or 0)
    except ValueError:
        return 0.0


def faults_key(keys: SdkKeys) -> str:
    """The participant's faults hash, next to the SDK's own records."""
    return f"{keys.base}:faults"


Take = Callable[[str], Awaitable[bool]]


async def pick(
    faults: dict[str, str], cmd: SagaCommand, take: Take, rng: random.Random
) -> Injection:
    """The injection for one new command; `take(counter)` takes a counted unit atomically."""
    if not faults:
        return NONE
    latency_s = _int(faults, "latency_ms") / 1000 if _applies(faults, "latency", cmd) else 0.0
    if (
        _int(faults, "no_reply") > 0
        and _applies(faults, "no_reply", cmd)
        and await take("no_reply")
    ):
        run_anyway = faults.get("no_reply_after_effect") == "1"
        return Injection(latency_s, no_reply=True, run_anyway=run_anyway)
    if (
        _int(faults, "fail_next") > 0
        and _applies(faults, "fail_next", cmd)
        and await take("fail_next")
    ):
        retryable = faults.get("fail_next_retryable", "1") == "1"
        return Injection(latency_s, fail=(retryable, "injected failure (fail-next)"))
    rate = _float(faults, "fail_rate")
    if rate > 0 and _applies(faults, "fail_rate", cmd) and rng.random() < rate:
        retryable = faults.get("fail_rate_retryable", "1") == "1"
        return Injection(latency_s, fail=(retryable, f"injected failure (fail-rate {rate:g})"))
    return Injection(latency_s) if latency_s else NONE


class FaultInjection(Middleware):
    """Applies the faults set in the participant's hash to its new commands."""

    async def before_batch(self, batch: BatchScope) -> None:
        key = faults_key(SdkKeys(batch.settings.key_prefix, batch.participant))
        batch.state[self] = dict(await batch.redis.hgetall(key))

    async def handle(self, cmd: SagaCommand, ctx: Context, call_next: CallNext) -> Outcome | None:
        key = faults_key(SdkKeys(ctx.settings.key_prefix, ctx.participant))

        async def take(counter: str) -> bool:
            return bool(await ctx.redis.register_script(TAKE)(keys=[key], args=[counter]))

        injection = await pick(ctx.batch.state.get(self) or {}, cmd, take, ctx.rng)
        if injection.latency_s:
            await asyncio.sleep(injection.latency_s)  # the injected latency itself
        if injection.no_reply and not injection.run_anyway:
            ctx.log.warning("%s swallowed (injected no-reply)", cmd.message_id)
            return None
        if injection.fail is not None:
            retryable, reason = injection.fail
            raise (RetryableError if retryable else NonRetryableError)(reason)
        outcome = await call_next()
        if injection.no_reply:
            ctx.log.warning("%s handled, reply dropped (injected no-reply)", cmd.message_id)
            return None
        return outcome


# --- setting faults (the CLI and tests) ---------------------------------------------------


def _flag(value: bool) -> str:
    return "1" if value else "0"


async def fail_next(
    redis: Redis, keys: SdkKeys, count: int, retryable: bool = True, compensations: bool = False
) -> None:
    await redis.hset(
        faults_key(keys),
        mapping={
            "fail_next": count,
            "fail_next_retryable": _flag(retryable),
            "fail_next_compensations": _flag(compensations),
        },
    )


async def fail_rate(
    redis: Redis, keys: SdkKeys, rate: float, retryable: bool = True, compensations: bool = False
) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError("the failure rate is a probability between 0 and 1")
    await redis.hset(
        faults_key(keys),
        mapping={
            "fail_rate": repr(rate),
            "fail_rate_retryable": _flag(retryable),
            "fail_rate_compensations": _flag(compensations),
        },
    )


async def latency(redis: Redis, keys: SdkKeys, ms: int, compensations: bool = False) -> None:
    await redis.hset(
        faults_key(keys), mapping={"latency_ms": ms, "latency_compensations": _flag(compensations)}
    )


async def no_reply(
    redis: Redis, keys: SdkKeys, count: int, after_effect: bool = False, compensations: bool = False
) -> None:
    await redis.hset(
        faults_key(keys),
        mapping={
            "no_reply": count,
            "no_reply_after_effect": _flag(after_effect),
            "no_reply_compensations": _flag(compensations),
        },
    )


async def clear(redis: Redis, keys: SdkKeys) -> None:
    await redis.delete(faults_key(keys))


async def show(redis: Redis, keys: SdkKeys) -> dict[str, str]:
    raw = await redis.hgetall(faults_key(keys))
    return {str(k): str(v) for k, v in raw.items()}
