"""Kafka errors: a command Kafka can never take dead-letters the input that wrote it (the loop
moves on, the saga ends through its timeouts); offset commits are retried on retriable errors,
and a rebalance still only logs."""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import KafkaError

from infra import kafka
from infra.rdkafka import KafkaClientError
from orchestrator.engine.daemon import Orchestrator
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, H_ERROR_MESSAGE, H_SOURCE, header
from tests.support.kafka import produce, read_all, wait_for
from tests.support.offsets import committed_and_ends
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_e2e import start_order

#: above the producer's batch size (256 KiB), so only a record this large fills a batch alone
COMMANDS_TOPIC_MAX_BYTES = 300_000


def limit_topic(settings: Settings, topic: str, max_bytes: int) -> None:
    """Set the topic's max.message.bytes on the broker."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    entry = ConfigEntry(
        "max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    client = kafka.admin(settings)  # kept alive until the futures resolve
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def big_start(saga_id: str) -> bytes:
    """A StartSaga whose data makes every command of the saga larger than the commands topic
    takes; it travels on saga-events, which takes it."""
    data = {
        "customerId": "c-1",
        "items": [{"productId": "sku-1", "quantity": 1}],
        "amount": 1,
        "note": "x" * (COMMANDS_TOPIC_MAX_BYTES + 50_000),
    }
    doc = {"sagaId": saga_id, "command": "StartSaga", "sagaType": "order_fulfillment"}
    return orjson.dumps(doc | {"data": data})


async def test_a_command_too_large_for_the_topic_dead_letters_its_input(
    settings: Settings, reader: SagaReader
) -> None:
    """The broker refuses a saga's command for good (MSG_SIZE_TOO_LARGE): the input that
    wrote it goes to the DLQ with the reason, its outbox entry is dropped, the loop commits
    and moves on (the sagas after it complete), and the big saga ends through its timeouts
    instead of being retried forever."""
    limit_topic(settings, settings.commands_topic, COMMANDS_TOPIC_MAX_BYTES)
    big = "too-big-1"
    small = [f"small-{i}" for i in range(12)]
    async with ScriptedParticipant(settings), running(settings) as orch:
        await produce(settings, settings.events_topic, [(big.encode(), big_start(big))])
        await produce(
            settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in small]
        )
        states = await reader.wait_final(small, timeout_s=60)
        assert set(states.values()) == {"completed"}
        final = await reader.wait_final([big], timeout_s=90)
        assert final[big] in ("failed", "needs_intervention"), final
        assert orch.store is not None
        assert await orch.store.outbox_depth() == 0
    dead = await read_all(settings, settings.dlq_topic, expect=6, timeout_s=10)
    assert dead, "nothing was dead-lettered"
    starts = [r for r in dead if r.value == big_start(big)]
    assert len(starts) == 1, [header(r.headers, H_ERROR_MESSAGE) for r in dead]
    first = starts[0]
    assert header(first.headers, H_ERROR_CLASS) == "MSG_SIZE_TOO_LARGE"
    assert header(first.headers, H_SOURCE) == "orchestrator"
    reason = header(first.headers, H_ERROR_MESSAGE) or ""
    assert f"{big}:reserve_inventory:action:1" in reason and "can never be published" in reason
    # the retries the timeouts caused were refused the same way, each dead-lettered once
    assert all(header(r.headers, H_ERROR_CLASS) == "MSG_SIZE_TOO_LARGE" for r in dead)
    assert all((r.key or b"") == big.encode() for r in dead)


async def committed_all(orch: Orchestrator, settings: Settings) -> bool:
    topics = [settings.commands_topic, settings.events_topic]
    group = f"{settings.key_prefix}-orchestrator"
    committed, ends = await committed_and_ends(settings, group, topics)
    return all(not end or committed[tp] >= end for tp, end in ends.items())


async def test_offset_commits_are_retried_and_a_rebalance_only_logs(
    settings: Settings, reader: SagaReader
) -> None:
    """A commit that fails with a retriable error (a request timing out) is retried with
    backoff and counted, never ending the daemon; a commit refused after a rebalance
    (ILLEGAL_GENERATION) is logged and dropped. Every offset ends up committed and every
    saga completes."""
    ids = [f"commit-{i}" for i in range(10)]
    async with ScriptedParticipant(settings), running(settings) as orch:
        assert orch.consumer is not None
        real = orch.consumer.commit
        refused = KafkaClientError(KafkaError(KafkaError.ILLEGAL_GENERATION), "commit")
        timeouts = [KafkaClientError(KafkaError(KafkaError.REQUEST_TIMED_OUT)) for _ in range(3)]
        script: list[Exception] = [refused, *timeouts]

        async def flaky(offsets: Any = None) -> Any:
            if script:
                raise script.pop(0)
            return await real(offsets)

        orch.consumer.commit = flaky  # type: ignore[method-assign]
        starts = [(s.encode(), start_order(s)) for s in ids]
        await produce(settings, settings.commands_topic, starts)
        states = await reader.wait_final(ids)
        assert set(states.values()) == {"completed"}
        assert not script
        assert orch.metrics.infra_errors_by_kind.get(("kafka", "REQUEST_TIMED_OUT")) == 3
        # The dropped commit (the first: the starts') is made good by each partition's next
        # commit. Per participant, nothing else ever arrives on the commands topic (the
        # commands have topics of their own), so the same starts once more: duplicates, which
        # change nothing, on the very partitions whose commit was dropped.
        await produce(settings, settings.commands_topic, starts)

        async def caught_up() -> bool:
            return await committed_all(orch, settings)

        await wait_for(caught_up, 30, "every input offset to be committed")
