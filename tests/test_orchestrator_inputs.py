"""Hostile and human input on the real broker: poison goes to the dead-letter topic with reason
headers while valid sagas on the same partitions keep completing; StartOrder as people type it."""

from __future__ import annotations

import subprocess

import orjson

from schemas.config import Settings
from schemas.dlq import header
from tests.support.commands import read_commands
from tests.support.kafka import produce, read_all
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_e2e import start_order


async def test_poison_goes_to_dlq_and_partitions_move_on(
    settings: Settings, reader: SagaReader
) -> None:
    """Garbage, invalid JSON, 10 MB, unknown type and a reply for an unknown saga are
    dead-lettered with their bytes and reason headers; valid sagas around them complete."""
    reply_unknown = orjson.dumps(
        {
            "messageType": "StepCompleted",
            "sagaId": "nobody",
            "step": "reserve_inventory",
            "attempt": 1,
            "commandId": "x",
            "commandType": "ReserveItems",
        }
    )
    poison = [
        (b"p-garbage", b"\x89PNG\r\n\x1a\n\xff\xfe garbage"),
        (b"p-json", b'{"sagaId": "p-json", "command": "StartOrder",'),
        (b"p-big", b"{" + b" " * (10 * 1024 * 1024) + b"}"),
        (b"p-type", b'{"sagaId": "p-type", "command": "ShipTheMoon"}'),
        (b"nobody", reply_unknown),
    ]
    valid = [f"ok-{i}" for i in range(12)]
    async with ScriptedParticipant(settings), running(settings):
        await produce(settings, settings.commands_topic, [(k, v) for k, v in poison[:4]])
        await produce(settings, settings.events_topic, [poison[4]])
        await produce(
            settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in valid]
        )
        states = await reader.wait_final(valid)
        dead = await read_all(settings, settings.dlq_topic, expect=5)
    assert set(states.values()) == {"completed"}
    by_key = {r.key: r for r in dead}
    assert set(by_key) == {k for k, _ in poison}
    expected = {
        b"p-garbage": "undecodable",
        b"p-json": "invalid_json",
        b"p-big": "too_large",
        b"p-type": "unknown_type",
        b"nobody": "rejected",
    }
    for key, value in poison:
        r = by_key[key]
        assert header(r.headers, "dlq-error-class") == expected[key]
        assert r.value == value
        topic = settings.events_topic if key == b"nobody" else settings.commands_topic
        assert header(r.headers, "dlq-original-topic") == topic
        assert header(r.headers, "dlq-original-partition") is not None
        assert header(r.headers, "dlq-original-offset") is not None
        assert header(r.headers, "dlq-time") is not None
        assert header(r.headers, "dlq-error-message")
    assert "unknown saga" in (header(by_key[b"nobody"].headers, "dlq-error-message") or "")


async def test_start_order_as_people_type_it(settings: Settings, reader: SagaReader) -> None:
    """camelCase or snake_case, with or without a key, through kcat: each starts one saga; a
    second StartOrder for the same id starts nothing new; the minimal line is dead-lettered
    naming what is missing."""
    snake = orjson.dumps(
        {
            "saga_id": "snake-1",
            "command": "StartOrder",
            "customer_id": "c",
            "items": [{"product_id": "sku-9", "quantity": 1}],
            "amount": "10.00",
            "payment_method": "card",
        }
    )
    lines = b"\n".join(
        [
            start_order("kcat-camel"),
            snake,
            start_order("kcat-camel", amount=999),
            b'{"sagaId":"123","command":"StartOrder"}',
        ]
    )
    async with ScriptedParticipant(settings) as p, running(settings):
        # no key: kcat without -K
        subprocess.run(
            ["kcat", "-P", "-b", settings.kafka_bootstrap_servers, "-t", settings.commands_topic],
            input=lines + b"\n",
            check=True,
            timeout=30,
        )
        await produce(settings, settings.commands_topic, [(None, start_order("nokey-1"))])
        states = await reader.wait_final(["kcat-camel", "snake-1", "nokey-1"])
        dead = await read_all(settings, settings.dlq_topic, expect=1)
    assert set(states.values()) == {"completed"}
    assert len([c for c in p.by_saga["kcat-camel"] if c.step == "reserve_inventory"]) == 1
    # without a key the two StartOrders may land on different partitions: either may win, once
    assert orjson.loads((await reader.fields("kcat-camel"))["data"])["amount"] in ("42.5", "999")
    assert orjson.loads((await reader.fields("snake-1"))["data"])["items"] == [
        {"productId": "sku-9", "quantity": 1}
    ]
    history = await reader.history("kcat-camel")
    assert any("start for existing saga" in h["note"] for h in history)
    assert len(dead) == 1
    message = header(dead[0].headers, "dlq-error-message") or ""
    assert "items" in message and "amount" in message  # the customer is optional


async def test_avro_start_order_and_avro_commands(settings: Settings, reader: SagaReader) -> None:
    """A StartOrder in the Confluent wire format (registry-less Avro) starts a saga, and with
    output_format=avro the orchestrator's commands are Avro too; the saga completes."""
    from schemas import avro, codec
    from schemas.messages import OrderItem, StartOrder

    avro.use(avro.SchemaTable.local())
    msg = StartOrder(
        saga_id="avro-1",
        customer_id="c-avro",
        items=[OrderItem(product_id="sku-a", quantity=3)],
        amount="19.99",
    )
    value = codec.encode(msg, "avro")
    assert value[0] == 0
    async with ScriptedParticipant(settings) as p, running(settings, output_format="avro"):
        await produce(settings, settings.commands_topic, [(b"avro-1", value)])
        assert (await reader.wait_final(["avro-1"]))["avro-1"] == "completed"
    assert len(p.by_saga["avro-1"]) == 4
    # the start and the four participant commands, wherever the mode puts the latter
    commands = await read_commands(settings, 5, settings.commands_topic)
    avro_commands = [r for r in commands if header(r.headers, "saga-message-type") == "SagaCommand"]
    assert avro_commands and all(r.value[0] == 0 for r in avro_commands)
    assert orjson.loads((await reader.fields("avro-1"))["data"])["items"] == [
        {"productId": "sku-a", "quantity": 3}
    ]
