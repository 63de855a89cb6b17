"""The SDK against real Kafka and Redis: error classification, routing, dead letters, ctx.tx
and ctx.atomic, replicas, and the shape of replies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra import redis as redis_factory
from participants.keys import group_id, key_for
from participants.sdk import (
    Context,
    GuardedScript,
    InfrastructureError,
    NonRetryableError,
    Participant,
    RetryableError,
    SagaCommand,
)
from participants.testing import Raw, TopicReader, command, produce, running
from schemas import codec
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, H_ERROR_MESSAGE, H_OFFSET, H_SOURCE, H_TOPIC
from schemas.headers import H_MESSAGE_TYPE, H_PARTICIPANT, H_SAGA_ID, H_TRACEPARENT
from schemas.messages import StartOrder, StepCompensated, StepCompleted, StepFailed
from tests.conftest import BOTH_REDIS
from tests.support.kafka import wait_for
from tests.support.offsets import wait_committed_to_end

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [BOTH_REDIS, pytest.mark.participant_topics("demo", "seats")]


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.events_topic) as reader:
        yield reader


@pytest.fixture
async def dlq(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings, settings.dlq_topic) as reader:
        yield reader


def demo() -> Participant:
    """A participant whose handlers misbehave on request (data["mode"])."""
    svc = Participant("demo")
    calls: list[str] = []

    @svc.action("Do")
    async def do(cmd: SagaCommand, ctx: Context) -> dict[str, str] | None:
        calls.append(cmd.message_id)
        mode = cmd.data.get("mode")
        if mode == "retryable":
            raise RetryableError("busy, try later")
        if mode == "final":
            raise NonRetryableError("never going to work")
        if mode == "bug":
            raise KeyError("surprise")
        if mode == "bad-result":
            return {"x": "y" * 5000}
        if mode == "infra-once" and calls.count(cmd.message_id) == 1:
            raise InfrastructureError("database restarting")
        ctx.tx.hincrby(ctx.key("count"), "done")
        return {"ok": "yes", "calls": str(calls.count(cmd.message_id))}

    @svc.compensation("Undo")
    async def undo(cmd: SagaCommand, ctx: Context) -> None:
        if cmd.data.get("mode") == "flaky" and cmd.attempt == 1:
            raise RetryableError("not yet")
        ctx.tx.hincrby(ctx.key("count"), "undone")

    return svc


def do(saga: str, mode: str = "", attempt: int = 1) -> SagaCommand:
    return command(saga, "demo", "Do", "work", attempt=attempt, data={"mode": mode})


@pytest.mark.parametrize(
    ("mode", "retryable", "reason"),
    [
        ("retryable", True, "busy, try later"),
        ("final", False, "never going to work"),
        ("bug", True, "KeyError: 'surprise'"),
        ("bad-result", True, "ValueError: result value of 'x' is longer"),
    ],
)
async def test_handler_errors_are_classified(
    settings: Settings, events: TopicReader, mode: str, retryable: bool, reason: str
) -> None:
    """RetryableError, NonRetryableError, any other exception (retryable, class and message)."""
    cmd = do("e1", mode)
    async with running(settings, demo()) as worker:
        await produce(settings, [cmd, do("e2")])
        replies = await events.replies([cmd.message_id, do("e2").message_id])
        assert worker.stats.errors == 0
    failed = replies[cmd.message_id]
    assert isinstance(failed, StepFailed)
    assert failed.retryable is retryable and failed.reason.startswith(reason)
    assert isinstance(replies[do("e2").message_id], StepCompleted)  # the worker carried on


async def test_infrastructure_error_is_retried_in_place(
    settings: Settings, events: TopicReader
) -> None:
    """A handler raising InfrastructureError is run again, not answered with a failure."""
    cmd = do("i1", "infra-once")
    async with running(settings, demo()):
        await produce(settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepCompleted) and reply.result["calls"] == "2"


async def test_tx_writes_apply_once(settings: Settings, events: TopicReader) -> None:
    """ctx.tx writes land once per step, however often the command comes."""
    cmds = [do("t1"), do("t1"), do("t1", attempt=2)]
    async with running(settings, demo()):
        await produce(settings, cmds)
        await events.until(lambda _: len(events.replies_to(cmds[0].message_id)) == 2)
        await events.reply(cmds[2].message_id)
    redis = redis_factory.client(settings, decode=True)
    try:
        assert await redis.hget(key_for(redis, settings.key_prefix, "demo", "count"), "done") == "1"
    finally:
        await redis.aclose()


async def test_unknown_command_type_fails_for_good(settings: Settings, events: TopicReader) -> None:
    """A command type without a handler: non-retryable StepFailed naming it."""
    cmd = command("u1", "demo", "Teleport", "work")
    wrong_kind = command("u2", "demo", "Do", "work", compensation=True)
    async with running(settings, demo()):
        await produce(settings, [cmd, wrong_kind])
        replies = await events.replies([cmd.message_id, wrong_kind.message_id])
    assert not replies[cmd.message_id].retryable and "Teleport" in replies[cmd.message_id].reason
    assert "no compensation handler for Do" in replies[wrong_kind.message_id].reason


async def test_reply_shape(settings: Settings, events: TopicReader) -> None:
    """Keyed by saga id; headers name the reply type and saga; ids and trace echo the command."""
    cmd = do("r1").model_copy(
        update={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    comp = command("r1", "demo", "Undo", "work", compensation=True)
    async with running(settings, demo()):
        await produce(settings, [cmd, comp])
        await events.replies([cmd.message_id, comp.message_id])
    first, second = events.seen
    assert first.key == b"r1"
    assert first.header(H_MESSAGE_TYPE) == "StepCompleted" and first.header(H_SAGA_ID) == "r1"
    assert first.header(H_TRACEPARENT) == cmd.traceparent
    reply = first.message
    assert isinstance(reply, StepCompleted)
    assert (reply.step, reply.attempt, reply.command_type, reply.compensation) == (
        "work",
        1,
        "Do",
        False,
    )
    assert reply.traceparent == cmd.traceparent and reply.saga_type == cmd.saga_type
    assert isinstance(second.message, StepCompensated) and second.message.compensation
    assert second.header(H_MESSAGE_TYPE) == "StepCompensated"


@pytest.mark.parametrize("command_topics", ["single"], indirect=True)
async def test_routing_skips_what_is_not_ours(
    settings: Settings, events: TopicReader, dlq: TopicReader
) -> None:
    """On the one commands topic (single mode: in per-participant mode a worker's topic is its
    own, see test_command_topics_e2e.py): other participants' commands and StartOrders are
    skipped; a headerless command for us is handled; undecodable records without our header
    are left to the orchestrator."""
    other = command("o1", "payment", "ProcessPayment", "process_payment")
    start = StartOrder(
        saga_id="o2", customer_id="c", items=[{"product_id": "A", "quantity": 1}], amount="1.00"
    )
    headerless = do("o3")
    marker = do("o4")
    records = [
        other,  # another participant's header: never decoded
        Raw(b"\xff garbage", b"o5", [(H_PARTICIPANT, b"payment")]),
        Raw(codec.encode(start), b"o2"),  # no headers: decoded, skipped
        Raw(b"not json at all", b"o6"),  # no headers, undecodable: not ours to dead-letter
        Raw(codec.encode(headerless), b"o3"),  # no headers, a command for us: handled
        marker,
    ]
    async with running(settings, demo()) as worker:
        await produce(settings, records)
        await events.replies([headerless.message_id, marker.message_id])
        await events.until(lambda _: worker.stats.skipped == 4)
    assert worker.stats.dead_lettered == 0
    assert {r.message.saga_id for r in events.seen if r.message} == {"o3", "o4"}


async def test_undecodable_with_our_header_goes_to_the_dlq(
    settings: Settings, dlq: TopicReader
) -> None:
    """Garbage, invalid JSON, a wrong message type, or a misaddressed command carrying our
    header: dead-lettered with original bytes, key, headers and the reason headers."""
    ours = [(H_PARTICIPANT, b"demo"), (H_MESSAGE_TYPE, b"SagaCommand")]
    misaddressed = command("d4", "payment", "ProcessPayment", "process_payment")
    records = [
        Raw(b"\x07\x08 binary garbage", b"d1", ours),
        Raw(b'{"messageType": "SagaCommand", "sagaId": ', b"d2", ours),
        Raw(b'{"messageType": "SagaCommand", "sagaId": "d3"}', b"d3", ours),
        Raw(codec.encode(misaddressed), b"d4", ours),
    ]
    own = settings.command_topic_of("demo")  # the commands topic in single mode
    async with running(settings, demo()):
        await produce(settings, records, topic=own)
        await dlq.until(lambda seen: len(seen) == 4)
    by_key = {r.key: r for r in dlq.seen}
    assert by_key[b"d1"].value == b"\x07\x08 binary garbage"
    assert by_key[b"d1"].header(H_ERROR_CLASS) == "undecodable"
    assert by_key[b"d2"].header(H_ERROR_CLASS) == "invalid_json"
    assert by_key[b"d3"].header(H_ERROR_CLASS) == "invalid"
    assert "missing" in (by_key[b"d3"].header(H_ERROR_MESSAGE) or "")
    assert by_key[b"d4"].header(H_ERROR_CLASS) == "misaddressed"
    for r in dlq.seen:
        assert r.header(H_SOURCE) == "participant:demo"
        assert r.header(H_TOPIC) == own and r.header(H_OFFSET) is not None
        assert r.header(H_PARTICIPANT) == "demo"  # original headers kept


RESERVE_ONE = GuardedScript(
    """
    local left = tonumber(redis.call('GET', KEYS[1]) or '0')
    if left < 1 then return {'fail', '0', 'sold out'} end
    redis.call('DECR', KEYS[1])
    return {'ok', 'left', tostring(left - 1)}
    """,
    name="reserve_one",
)


async def test_atomic_lua_body(settings: Settings, events: TopicReader) -> None:
    """ctx.atomic runs a custom Lua body inside the guard: effect once, failures reported."""
    svc = Participant("seats")

    @svc.action("Take")
    async def take(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        return await ctx.atomic(RESERVE_ONE, [ctx.key("left")], [])

    redis = redis_factory.client(settings, decode=True)
    await redis.set(key_for(redis, settings.key_prefix, "seats", "left"), 2)
    cmds = [command(f"a{i}", "seats", "Take", "take") for i in range(3)]
    async with running(settings, svc):
        await produce(settings, [cmds[0], cmds[0]])
        first = await events.reply(cmds[0].message_id)
        assert isinstance(first, StepCompleted), first
        assert first.result == {"left": "1"}
        await produce(settings, cmds[1:])
        replies = await events.replies([c.message_id for c in cmds])
    # a1 and a2 race for the last seat (different sagas run concurrently): one of each.
    later = [replies[c.message_id] for c in cmds[1:]]
    assert sorted(type(r).__name__ for r in later) == ["StepCompleted", "StepFailed"]
    assert [r.result for r in later if isinstance(r, StepCompleted)] == [{"left": "0"}]
    assert [r.reason for r in later if isinstance(r, StepFailed)] == ["sold out"]
    assert await redis.get(key_for(redis, settings.key_prefix, "seats", "left")) == "0"
    await redis.aclose()


async def test_replicas_share_the_work_and_each_command_runs_once(
    settings: Settings, events: TopicReader
) -> None:
    """Two replicas in one group: every command answered, each effect applied once."""
    cmds = [do(f"m{i}") for i in range(60)]
    async with running(settings, demo()) as a, running(settings, demo()) as b:

        async def both_joined() -> bool:
            return a.worker.joined and b.worker.joined

        await wait_for(both_joined, 60, "both replicas to get partitions")
        await produce(settings, cmds)
        await events.replies([c.message_id for c in cmds], timeout_s=60)
    # both took a share, and no command ran twice
    assert a.stats.handled > 0 and b.stats.handled > 0, (a.stats, b.stats)
    assert a.stats.handled + b.stats.handled == 60, (a.stats, b.stats)
    redis = redis_factory.client(settings, decode=True)
    assert await redis.hget(key_for(redis, settings.key_prefix, "demo", "count"), "done") == "60"
    await redis.aclose()


async def test_stop_finishes_and_commits(settings: Settings, events: TopicReader) -> None:
    """A stopped worker commits what it answered: a new worker re-runs nothing."""
    cmds = [do(f"s{i}") for i in range(10)]
    async with running(settings, demo()) as first:
        await produce(settings, cmds)
        await events.replies([c.message_id for c in cmds])
    assert first.stats.commits >= 1
    marker = do("s-marker")
    async with running(settings, demo()) as second:
        await produce(settings, [marker])
        await events.reply(marker.message_id)
        # everything on the topic was read before counting (not only the marker's partition)
        group = group_id(settings.key_prefix, "demo")
        own = settings.command_topic_of("demo")
        await wait_committed_to_end(settings, group, [own], timeout_s=30)
        assert second.stats.handled + second.stats.replayed == 1


async def test_avro_commands_and_replies(settings: Settings) -> None:
    """With output_format=avro, Avro commands are understood and replies are Avro too."""
    avro_settings = settings.model_copy(update={"output_format": "avro"})
    cmd = do("v1")
    async with (
        TopicReader(avro_settings, settings.events_topic) as events,
        running(avro_settings, demo()),
    ):
        await produce(avro_settings, [cmd])
        reply = await events.reply(cmd.message_id)
    assert isinstance(reply, StepCompleted)
    assert events.seen[0].value[0] == 0  # Confluent framing


async def test_failed_compensation_then_retry_in_one_batch(
    settings: Settings, events: TopicReader
) -> None:
    """Compensation attempt 1 fails, attempt 2 (same batch) runs and succeeds; the forward
    action after them is refused."""
    c1, c2 = (
        command("b1", "demo", "Undo", "work", attempt=n, compensation=True, data={"mode": "flaky"})
        for n in (1, 2)
    )
    late = do("b1")
    await produce(settings, [c1, c2, late])  # before the worker starts: one batch
    async with running(settings, demo()):
        replies = await events.replies([c1.message_id, c2.message_id, late.message_id])
    assert isinstance(replies[c1.message_id], StepFailed) and replies[c1.message_id].compensation
    assert isinstance(replies[c2.message_id], StepCompensated)
    assert isinstance(replies[late.message_id], StepFailed)
    assert "refused" in replies[late.message_id].reason
