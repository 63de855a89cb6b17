"""`saga dlq list|show|replay` on the real broker: a poison StartOrder is inspected, fixed and
replayed into a completed saga; replaying twice has no second effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from infra import kafka
from schemas.config import Settings
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant
from tests.test_ops_cli_e2e import cli
from tests.test_orchestrator_e2e import start_order


async def wait_consumed(settings: Settings, sent_to: str, timeout_s: float = 60) -> None:
    """Wait until the orchestrator's group committed past a record ("topic:partition:offset")."""
    topic, partition, offset = sent_to.rsplit(":", 2)
    tp = TopicPartition(topic, int(partition))
    c = kafka.consumer(settings, group_id=f"{settings.key_prefix}-orchestrator")
    await c.start()
    try:

        async def committed() -> bool:
            return ((await c.committed(tp)) or 0) > int(offset)

        await wait_for(committed, timeout_s, f"orchestrator to consume {sent_to}", interval_s=0.1)
    finally:
        await c.stop()


async def letters(settings: Settings, *args: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await cli(settings, "dlq", "list", *args, "--json")).json()
    return result


async def test_poison_order_inspected_fixed_and_replayed(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """A StartOrder without items is dead-lettered; list and show explain why; the fixed value
    replayed with --value-file starts and completes the saga; a second replay changes nothing."""
    sid = "poison-order-1"
    poison = orjson.dumps(
        {"sagaId": sid, "command": "StartOrder", "customerId": "c-1", "amount": "5.00"}
    )
    async with ScriptedParticipant(settings) as p, running(settings):
        await produce(settings, settings.commands_topic, [(sid.encode(), poison)])

        async def dead_lettered() -> bool:
            return bool(await letters(settings, "--saga", sid))

        await wait_for(dead_lettered, 60, "the poison record in the DLQ", interval_s=0.2)
        [entry] = await letters(settings, "--saga", sid)
        by_reason = await letters(settings, "--reason", "missing items")
        other_reason = await letters(settings, "--reason", "too_large")
        recent = await letters(settings, "--since", "1h")
        future = await letters(settings, "--since", "2999-01-01T00:00:00")
        table = await cli(settings, "dlq", "list")
        pos = entry["position"]
        shown = (await cli(settings, "dlq", "show", pos, "--json")).json()
        human = await cli(settings, "dlq", "show", pos)
        absent = await cli(settings, "dlq", "show", "0:999999")

        fixed = tmp_path / "fixed.json"
        doc = orjson.loads(poison)
        doc["items"] = [{"productId": "sku-1", "quantity": 1}]
        fixed.write_bytes(orjson.dumps(doc))
        dry = (
            await cli(
                settings, "dlq", "replay", pos, "--value-file", str(fixed), "--dry-run", "--json"
            )
        ).json()
        assert await reader.state(sid) is None
        first = (
            await cli(settings, "dlq", "replay", pos, "--value-file", str(fixed), "--json")
        ).json()
        assert (await reader.wait_final([sid]))[sid] == "completed"
        history_before = await reader.history(sid)
        second = (
            await cli(settings, "dlq", "replay", pos, "--value-file", str(fixed), "--json")
        ).json()
        await wait_consumed(settings, second["records"][0]["sentTo"])
    assert entry["errorClass"] == "invalid" and "missing items" in entry["errorMessage"]
    assert entry["originalTopic"] == settings.commands_topic
    assert [e["sagaId"] for e in by_reason] == [sid] and other_reason == []
    assert len(recent) == 1 and future == []
    assert pos in table.out and "invalid" in table.out
    assert orjson.loads(shown["value"]) == orjson.loads(poison)
    assert shown["headers"]["dlq-error-class"] == "invalid"
    assert "dlq-original-offset" in human.out and sid in human.out
    assert absent.code == 1 and "no dead letter at 0:999999" in absent.err
    original = f"{settings.commands_topic}:{entry['originalPartition']}:{entry['originalOffset']}"
    assert dry["dryRun"] is True and dry["records"][0]["sent"] is False
    assert first["records"][0]["messageId"] == original
    assert second["records"][0]["messageId"] == original
    # one saga, one set of commands, and the second replay not even recorded
    assert [c.command_type for c in p.by_saga[sid]] == [
        "ReserveItems",
        "ProcessPayment",
        "CreateShipment",
        "SendOrderConfirmation",
    ]
    assert await reader.history(sid) == history_before
    fields = await reader.fields(sid)
    assert fields["version"] == "5"


async def test_replay_by_filter_twice_applies_once(settings: Settings, reader: SagaReader) -> None:
    """A dead letter whose value was fine (dead-lettered by some other cause) is replayed as is,
    by filter, at a paced rate, twice: one saga, one set of commands."""
    sid = "filter-replay-1"
    headers = [
        ("saga-id", sid.encode()),
        ("dlq-original-topic", settings.commands_topic.encode()),
        ("dlq-original-partition", b"0"),
        ("dlq-original-offset", b"4242"),
        ("dlq-error-class", b"RedisDown"),
        ("dlq-error-message", b"simulated outage at the source"),
        ("dlq-time", b"2024-05-01T10:00:00+00:00"),
        ("dlq-source", b"test"),
    ]
    await produce(settings, settings.dlq_topic, [(sid.encode(), start_order(sid))], headers)
    async with ScriptedParticipant(settings) as p, running(settings):
        everything = (await cli(settings, "dlq", "replay", "--all", "--dry-run", "--json")).json()
        first = await cli(settings, "dlq", "replay", "--saga", sid, "--reason", "redisdown")
        assert first.code == 0, first.err
        assert (await reader.wait_final([sid]))[sid] == "completed"
        second = (
            await cli(settings, "dlq", "replay", "--saga", sid, "--rate", "50", "--json")
        ).json()
        await wait_consumed(settings, second["records"][0]["sentTo"])
    assert [r["sagaId"] for r in everything["records"]] == [sid]
    assert "1 record(s) replayed" in first.out
    assert second["records"][0]["messageId"] == f"{settings.commands_topic}:0:4242"
    assert len(p.by_saga[sid]) == 4
    assert len(await reader.history(sid)) == 5
