"""SDK middleware against real Kafka and Redis: what it sees, and each thing it may do to a new
command (run it, fail it, swallow it, drop its reply), in order, once per batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from infra import redis as redis_factory
from participants.keys import key_for
from participants.middleware import run_chain
from participants.sdk import (
    BatchScope,
    CallNext,
    Context,
    InfrastructureError,
    Middleware,
    NonRetryableError,
    Outcome,
    Participant,
    SagaCommand,
)
from participants.testing import TopicReader, command, produce, running
from schemas.config import Settings
from schemas.messages import StepCompleted, StepFailed
from tests.conftest import BOTH_REDIS

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("mw", "chain")


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


class Scripted(Middleware):
    """Does to a command what its data["mw"] says, the first time it sees the command only."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.batches: list[list[str]] = []

    async def before_batch(self, batch: BatchScope) -> None:
        ids = [c.message_id for c in batch.commands]
        self.batches.append(ids)
        batch.state[self] = ids

    async def handle(self, cmd: SagaCommand, ctx: Context, call_next: CallNext) -> Outcome | None:
        self.seen[cmd.message_id] += 1
        assert cmd.message_id in ctx.batch.state[self]  # what before_batch prepared
        first = self.seen[cmd.message_id] == 1
        mode = cmd.data.get("mw") if first else None
        if mode == "fail":
            raise NonRetryableError("refused by the middleware")
        if mode == "swallow":
            return None
        if mode == "drop":
            await call_next()
            return None
        if mode == "forge":
            await call_next()
            return Outcome("completed", {"forged": "yes"})
        if mode == "infra":
            raise InfrastructureError("the middleware's own store is away")
        if mode == "audit":
            ctx.tx.hincrby(ctx.key("audit"), cmd.saga_id)
        return await call_next()


def service(mw: Middleware) -> tuple[Participant, Counter[str]]:
    """A participant with one action; counts its handler runs per command id."""
    svc = Participant("mw", middleware=[mw])
    runs: Counter[str] = Counter()

    @svc.action("Do")
    async def do(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        runs[cmd.message_id] += 1
        if cmd.data.get("handler") == "infra" and runs[cmd.message_id] == 1:
            raise InfrastructureError("database restarting")
        if cmd.data.get("handler") == "fail":
            raise NonRetryableError("the handler said no")
        return {"runs": str(runs[cmd.message_id])}

    return svc, runs


def do(saga: str, step: str = "work", **data: str) -> SagaCommand:
    return command(saga, "mw", "Do", step, data=dict(data))


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
async def test_only_new_commands_reach_the_middleware(
    settings: Settings, events: TopicReader
) -> None:
    """A duplicate is answered from the stored outcome without the middleware or the handler;
    before_batch lists a batch's new commands, never one answered from stored records."""
    mw = Scripted()
    svc, runs = service(mw)
    cmd = do("n1")
    async with running(settings, svc) as worker:
        await produce(settings, [cmd])
        await events.reply(cmd.message_id)
        await produce(settings, [cmd])
        await events.until(lambda _: len(events.replies_to(cmd.message_id)) == 2)
        assert worker.stats.handled == 1 and worker.stats.replayed == 1
    assert mw.seen[cmd.message_id] == 1 and runs[cmd.message_id] == 1
    assert mw.batches == [[cmd.message_id]]
    first, again = events.replies_to(cmd.message_id)
    assert first == again


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
async def test_a_middleware_failure_is_stored_and_answered(
    settings: Settings, events: TopicReader
) -> None:
    """Raising NonRetryableError: StepFailed(retryable=false) as from a handler, the handler
    never runs, and a re-delivery gets the same stored failure."""
    mw = Scripted()
    svc, runs = service(mw)
    cmd = do("f1", mw="fail")
    async with running(settings, svc) as worker:
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
        await produce(settings, [cmd])
        await events.until(lambda _: len(events.replies_to(cmd.message_id)) == 2)
        assert worker.stats.outcomes == {"failed": 1}
    assert isinstance(reply, StepFailed) and not reply.retryable
    assert reply.reason == "refused by the middleware"
    assert runs[cmd.message_id] == 0 and events.replies_to(cmd.message_id)[1] == reply


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
async def test_a_swallowed_command_stores_nothing(settings: Settings, events: TopicReader) -> None:
    """Returning None without call_next: no reply, no outcome; a re-delivery is new work."""
    mw = Scripted()
    svc, runs = service(mw)
    cmd, marker = do("s1", mw="swallow"), do("s1", step="after")
    async with running(settings, svc) as worker:
        await produce(settings, [cmd, marker])  # one saga: handled in order
        await events.reply(marker.message_id)
        assert events.replies_to(cmd.message_id) == []
        assert worker.stats.swallowed == 1 and runs[cmd.message_id] == 0
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepCompleted) and reply.result == {"runs": "1"}


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
async def test_a_dropped_reply_keeps_the_outcome(settings: Settings, events: TopicReader) -> None:
    """call_next then None: the outcome is stored, no reply; re-sent, the stored reply comes
    without running the handler again."""
    mw = Scripted()
    svc, runs = service(mw)
    cmd, marker = do("d1", mw="drop"), do("d1", step="after")
    async with running(settings, svc) as worker:
        await produce(settings, [cmd, marker])
        await events.reply(marker.message_id)
        assert events.replies_to(cmd.message_id) == []
        assert worker.stats.swallowed == 1 and worker.stats.outcomes == {"completed": 2}
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepCompleted) and runs[cmd.message_id] == 1


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
async def test_returning_another_outcome_is_refused(
    settings: Settings, events: TopicReader
) -> None:
    """A middleware cannot reply with anything but the stored outcome: the command is left
    unanswered (an SDK error), and a re-delivery gets the stored reply."""
    mw = Scripted()
    svc, _ = service(mw)
    cmd, marker = do("x1", mw="forge"), do("x1", step="after")
    async with running(settings, svc) as worker:
        await produce(settings, [cmd, marker])
        await events.reply(marker.message_id)
        assert worker.stats.errors == 1 and events.replies_to(cmd.message_id) == []
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepCompleted) and reply.result == {"runs": "1"}


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
async def test_middleware_writes_apply_with_the_handler_s(
    settings: Settings, events: TopicReader
) -> None:
    """ctx.tx writes queued before call_next land atomically with the outcome: once for a
    success, and not at all when the handler fails."""
    svc, _ = service(Scripted())
    ok, failing = do("w1", mw="audit"), do("w2", mw="audit", handler="fail")
    async with running(settings, svc):
        await produce(settings, [ok, failing, ok])
        await events.until(lambda _: len(events.replies_to(ok.message_id)) == 2)
        await events.reply(failing.message_id)
    async with redis_factory.connected(settings, decode=True) as redis:
        assert await redis.hgetall(key_for(redis, settings.key_prefix, "mw", "audit")) == {
            "w1": "1"
        }


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
async def test_outages_are_retried_at_the_right_level(
    settings: Settings, events: TopicReader
) -> None:
    """An outage in the handler is retried inside call_next (the middleware runs once); one the
    middleware raises itself runs the middleware again."""
    mw = Scripted()
    svc, runs = service(mw)
    in_handler, in_mw = do("o1", handler="infra"), do("o2", mw="infra")
    async with running(settings, svc) as worker:
        await produce(settings, [in_handler, in_mw])
        replies = await events.replies([in_handler.message_id, in_mw.message_id])
        assert worker.stats.infra_retries == 2
    assert all(isinstance(r, StepCompleted) for r in replies.values())
    assert (mw.seen[in_handler.message_id], runs[in_handler.message_id]) == (1, 2)
    assert (mw.seen[in_mw.message_id], runs[in_mw.message_id]) == (2, 1)


async def test_the_first_middleware_is_outermost() -> None:
    """run_chain nests middleware in the order given; use() takes a bare function too."""
    order: list[str] = []
    svc = Participant("chain")

    @svc.use
    async def outer(cmd: SagaCommand, ctx: Context, call_next: CallNext) -> Outcome | None:
        order.append("outer in")
        result = await call_next()
        order.append("outer out")
        return result

    class Inner(Middleware):
        async def handle(
            self, cmd: SagaCommand, ctx: Context, call_next: CallNext
        ) -> Outcome | None:
            order.append("inner")
            return await call_next()

    svc.use(Inner())
    done = Outcome("completed")

    async def handler() -> Outcome:
        order.append("handler")
        return done

    ctx = None  # the chain only passes it along
    result = await run_chain(svc.middleware, do("c1"), ctx, handler)  # type: ignore[arg-type]
    assert result is done
    assert order == ["outer in", "inner", "handler", "outer out"]
