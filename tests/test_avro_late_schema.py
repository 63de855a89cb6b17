"""Avro schema ids first seen after start-up, on the real Kafka and Redis: the orchestrator and the
workers fetch them from the registry (once), wait out a registry outage without dead-lettering,
and dead-letter an id the registry does not have.

The registry is a real one: Apicurio Registry's Confluent-compatible API, run by
scripts/stack_registry, seen through the recording proxy of tests/support/registry.py. The proxy
counts the fetches, and its `close()` then `start()` takes the registry away and brings it back on
the same port with the same data (a real restart of the in-memory registry would lose them).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import TopicPartition
from confluent_kafka.schema_registry import Schema
from fastavro import parse_schema, schemaless_writer

from infra import kafka
from orchestrator.engine.daemon import Orchestrator
from participants.samples.order.workers import inventory, seed_stock
from participants.testing import Raw, TopicReader, command, command_headers, order
from participants.testing import produce as produce_raw
from participants.testing import running as worker_running
from schemas import avro
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, H_ERROR_MESSAGE, H_SOURCE
from schemas.headers import H_MESSAGE_TYPE
from schemas.messages import Envelope, OrderItem, SagaCommand, StartOrder, StepCompleted
from schemas.registry import make_client, subject_for
from tests.support.kafka import wait_for
from tests.support.offsets import committed_and_ends, end_offsets
from tests.support.orch import SagaReader, running
from tests.support.registry import RealRegistry, real_registry, registry_url
from tests.support.scripted import ScriptedParticipant

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("inventory")

OUTAGE = ("network", "RegistryUnavailableError")  # how the loop counts a registry outage
NOT_REGISTERED = 999_999  # neither a registry id here nor a local id (those are >= 2**30)


@pytest.fixture(scope="module")
def registry_upstream() -> str:
    return registry_url()


@pytest.fixture
def registry(registry_upstream: str) -> Iterator[RealRegistry]:
    """The real registry, emptied; the process's schema table is registry-less again afterwards."""
    with real_registry(registry_upstream) as reg:
        yield reg
    avro.use(avro.SchemaTable.local())


async def registry_mode(settings: Settings, registry: RealRegistry) -> Settings:
    """What `saga orchestrator`/`saga participant` do at start-up with a registry URL."""
    s = settings.model_copy(update={"schema_registry_url": registry.url})
    await asyncio.to_thread(avro.prepare, s)
    return s


async def register_evolved(registry: RealRegistry, message_type: str) -> tuple[int, Any]:
    """A new, compatible version of a message's schema (an extra optional field), registered
    after start-up: its id and its parsed schema."""
    raw = copy.deepcopy(avro.default_schema_set().current[message_type].raw)
    raw["fields"].append({"name": "giftNote", "type": ["null", "string"], "default": None})

    def register() -> int:
        client = make_client(registry.url)
        return int(
            client.register_schema(subject_for(message_type), Schema(json.dumps(raw), "AVRO"))
        )

    return await asyncio.to_thread(register), parse_schema(raw)


def framed(schema_id: int, schema: Any, message: Envelope) -> bytes:
    """The message written with `schema` (the extra field set) under `schema_id`."""
    buf = io.BytesIO()
    buf.write(avro.header(schema_id))
    schemaless_writer(buf, schema, {**avro.to_record(message), "giftNote": "for you"})
    return buf.getvalue()


def start_order(saga_id: str) -> StartOrder:
    return StartOrder(
        saga_id=saga_id,
        time=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        customer_id="cust-1",
        items=[OrderItem(product_id="sku-1", quantity=2)],
        amount=Decimal("42.00"),
    )


async def send(settings: Settings, key: str, value: bytes) -> tuple[TopicPartition, int]:
    """Produce a StartOrder record as is; where it landed."""
    async with kafka.started(kafka.producer(settings)) as producer:
        sent = await producer.send(
            settings.commands_topic, value, key.encode(), headers=[(H_MESSAGE_TYPE, b"StartOrder")]
        )
        md = await sent
    return TopicPartition(md.topic, md.partition), md.offset


async def dead_letters(orch: Orchestrator, settings: Settings) -> int:
    return sum((await end_offsets(settings, [settings.dlq_topic])).values())


def fetches(registry: RealRegistry, schema_id: int) -> int:
    return registry.requests.count(f"GET /schemas/ids/{schema_id}")


@dataclass(frozen=True)
class Late:
    settings: Settings
    orch: Orchestrator
    new_id: int  # a StartOrder schema version registered after start-up
    schema: Any

    async def send(self, saga_id: str) -> tuple[TopicPartition, int]:
        value = framed(self.new_id, self.schema, start_order(saga_id))
        return await send(self.settings, saga_id, value)


@contextlib.asynccontextmanager
async def late_schema(settings: Settings, registry: RealRegistry) -> AsyncIterator[Late]:
    """The orchestrator (and a scripted participant) in registry mode, then a new StartOrder
    schema version registered."""
    s = await registry_mode(settings, registry)
    async with ScriptedParticipant(s), running(s) as orch:
        new_id, schema = await register_evolved(registry, "StartOrder")
        assert new_id not in avro.active().readers  # first seen after start-up
        yield Late(s, orch, new_id, schema)


async def test_a_schema_registered_after_start_up_is_fetched_and_decoded(
    settings: Settings, reader: SagaReader, registry: RealRegistry
) -> None:
    """A StartOrder under a schema id registered after start-up starts its saga (one fetch)."""
    async with late_schema(settings, registry) as late:
        await late.send("late-1")
        assert (await reader.wait_final(["late-1"]))["late-1"] == "completed"
        assert await dead_letters(late.orch, late.settings) == 0
    assert fetches(registry, late.new_id) == 1


async def test_a_registry_outage_is_waited_out_not_dead_lettered(
    settings: Settings, reader: SagaReader, registry: RealRegistry
) -> None:
    """While the registry is down the record waits uncommitted; once it is back the saga runs."""
    async with late_schema(settings, registry) as late:
        s, orch = late.settings, late.orch
        registry.close()
        tp, offset = await late.send("late-2")

        async def retried() -> bool:
            return orch.metrics.infra_errors_by_kind.get(OUTAGE, 0) >= 3

        await wait_for(retried, 30, "the registry fetch to be retried 3 times")
        assert any("schema registry" in p for p in orch.problems()), orch.problems()
        assert await dead_letters(orch, s) == 0
        assert await reader.state("late-2") is None
        committed, _ = await committed_and_ends(
            s, f"{s.key_prefix}-orchestrator", [s.commands_topic]
        )
        assert committed[(tp.topic, tp.partition)] <= offset

        registry.start()  # the same data on the same port
        assert (await reader.wait_final(["late-2"]))["late-2"] == "completed"
        assert await dead_letters(orch, s) == 0
        assert not orch.problems()


async def test_an_id_the_registry_does_not_have_is_dead_lettered(
    settings: Settings, registry: RealRegistry
) -> None:
    """An id unknown to the registry is dead-lettered saying so; two such records, one fetch."""
    s = await registry_mode(settings, registry)
    body = avro.encode_wire(start_order("ghost-1"))[avro.HEADER_SIZE :]
    value = avro.header(NOT_REGISTERED) + body
    async with TopicReader(s, s.dlq_topic) as dlq, running(s):
        await send(s, "ghost-1", value)
        await send(s, "ghost-2", value)
        letters = await dlq.until(lambda seen: len(seen) == 2)
    for r in letters:
        assert r.header(H_ERROR_CLASS) == "unknown_schema"
        reason = r.header(H_ERROR_MESSAGE) or ""
        assert f"the schema registry has no schema id {NOT_REGISTERED}" in reason, reason
    assert fetches(registry, NOT_REGISTERED) == 1


def reserve(saga_id: str) -> SagaCommand:
    return command(saga_id, "inventory", "ReserveItems", "reserve_inventory", data=order({"A": 1}))


async def test_a_worker_waits_out_the_registry_then_decodes_a_late_schema(
    settings: Settings, registry: RealRegistry
) -> None:
    """A worker's command under a late schema id waits out a registry outage, then is handled."""
    s = await registry_mode(settings, registry)
    await seed_stock(s, {"A": 5})
    cmd = reserve("late-w1")
    async with (
        TopicReader(s, s.events_topic) as events,
        worker_running(s, inventory.build()) as worker,
    ):
        new_id, schema = await register_evolved(registry, "SagaCommand")
        registry.close()
        raw = Raw(framed(new_id, schema, cmd), b"late-w1", command_headers(cmd))
        await produce_raw(s, [raw], topic=s.command_topic_of("inventory"))  # where it goes

        async def retried() -> bool:
            return worker.stats.infra_retries >= 3

        await wait_for(retried, 30, "the worker to retry the registry fetch 3 times")
        assert worker.stats.dead_lettered == 0 and not events.replies_to(cmd.message_id)

        registry.start()
        assert isinstance(await events.reply(cmd.message_id), StepCompleted)
        assert worker.stats.dead_lettered == 0 and worker.stats.errors == 0
    assert fetches(registry, new_id) == 1


async def test_a_worker_dead_letters_an_id_the_registry_does_not_have(
    settings: Settings, registry: RealRegistry
) -> None:
    """A command for this worker under an id the registry lacks is dead-lettered saying so."""
    s = await registry_mode(settings, registry)
    cmd = reserve("ghost-w1")
    body = avro.encode_wire(cmd)[avro.HEADER_SIZE :]
    raw = Raw(avro.header(NOT_REGISTERED) + body, b"ghost-w1", command_headers(cmd))
    async with (
        TopicReader(s, s.dlq_topic) as dlq,
        worker_running(s, inventory.build()),
    ):
        await produce_raw(s, [raw], topic=s.command_topic_of("inventory"))  # where it goes
        (letter,) = await dlq.until(lambda seen: len(seen) == 1)
    assert letter.header(H_ERROR_CLASS) == "unknown_schema"
    assert letter.header(H_SOURCE) == "participant:inventory"
    reason = letter.header(H_ERROR_MESSAGE) or ""
    assert f"the schema registry has no schema id {NOT_REGISTERED}" in reason, reason
    assert fetches(registry, NOT_REGISTERED) == 1
