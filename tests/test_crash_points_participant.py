"""The participant SDK's crash point (infra/crashpoints.py): a real payment worker SIGKILLs
itself after a charge and its stored outcome are committed and before the reply is produced.
Restarted, it answers the re-delivered command from the stored outcome: one charge per order,
every saga completes, and the business invariants of scripts/chaos hold."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from infra import kafka
from orchestrator.core.definition import Registry
from participants.config import WorkerOptions
from participants.keys import group_id
from participants.samples.order.workers import inventory, notification, shipping, snapshot
from participants.samples.order.workers import seed_stock as seed
from participants.worker import run_many
from schemas import codec
from schemas.config import Settings
from schemas.messages import Envelope, StepCompleted
from scripts.chaos_kit.check import Records, check, read_dead_letters, read_sagas
from scripts.chaos_kit.traffic import PRODUCTS, Order
from tests.conftest import BOTH_REDIS
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.procs import ROOT, orchestrator_env, stop
from tests.support.sagas_patient import ORDER_PATIENT
from tests.test_crash_points import armed, end_offsets, fired

# on the single Redis and on the Redis Cluster; the workers' command topics exist before
# they start, as in a deployment
pytestmark = [
    BOTH_REDIS,
    pytest.mark.participant_topics("inventory", "payment", "shipping", "notification"),
]

N_ORDERS = 60
POINT = "participant.after_effect"


def start_payment(settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.ops.cli", "participant", "run", "payment"],
            env=orchestrator_env(settings, **extra),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextlib.asynccontextmanager
async def other_workers(settings: Settings) -> AsyncIterator[None]:
    """Inventory, shipping and notification in this process (they are not the ones killed)."""
    stop_event = asyncio.Event()
    workers = [inventory.build(), shipping.build(), notification.build()]
    task = asyncio.create_task(run_many(settings, workers, stop_event, WorkerOptions()))
    try:
        yield
    finally:
        stop_event.set()
        await asyncio.wait_for(task, 60)


async def read_to_end(settings: Settings, topic: str) -> list[Envelope]:
    """Every message in `topic` up to the end offsets read first."""
    ends = await end_offsets(settings, topic)
    consumer = kafka.consumer(settings, group_id=None)
    out: list[Envelope] = []
    async with kafka.started(consumer):
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def caught_up() -> bool:
            for rs in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(codec.decode(r.value) for r in rs if r.offset < ends[r.partition])
            return all([await consumer.position(tp) >= ends[tp.partition] for tp in tps])

        await wait_for(caught_up, 60, f"{topic} read to its end")
    return out


def payment_replies(messages: list[Envelope]) -> dict[str, list[Any]]:
    """Per ProcessPayment command id, every reply to it in the events topic."""
    replies: dict[str, list[Any]] = defaultdict(list)
    for m in messages:
        if getattr(m, "command_type", None) == "ProcessPayment" and hasattr(m, "command_id"):
            replies[m.command_id].append(m)
    return replies


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill_after_the_effect_before_the_reply(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """SIGKILL after the 11th charge is committed with its outcome, before its reply; restarted:
    the re-delivered command is answered from the stored outcome, one charge per order, every
    order completed, stock conserved, the payment group's offsets committed to the end."""
    made = [Order(f"pe-{i}", "c-1", {PRODUCTS[i % 8]: 1}, Decimal(10 + i)) for i in range(N_ORDERS)]
    orders = {o.saga_id: o for o in made}
    seeded = dict.fromkeys(PRODUCTS, 100)
    await seed(settings, seeded)
    log, marker = tmp_path / "payment.log", tmp_path / "marker"
    small = {"SAGA_PARTICIPANT_MAX_BATCH": "5"}  # the kill lands with orders still to pay
    payment = start_payment(settings, log, **small, **armed(POINT, marker, after=10))
    try:
        async with running(settings, Registry([ORDER_PATIENT])), other_workers(settings):
            await produce(
                settings,
                settings.commands_topic,
                [(sid.encode(), o.record()) for sid, o in orders.items()],
            )
            await fired(payment, marker, POINT, log)
            # the gap: a charge is in the ledger whose reply never reached Kafka
            charged = {e["sagaId"] for e in (await snapshot(settings)).payments}
            replies = payment_replies(await read_to_end(settings, settings.events_topic))
            answered = {r.saga_id for rs in replies.values() for r in rs}
            assert charged - answered, (sorted(charged), sorted(answered))
            assert len(charged) < N_ORDERS, "every order was paid before the kill"
            payment = start_payment(settings, log, **small)
            states = await reader.wait_final(list(orders), timeout_s=180)
        assert set(states.values()) == {"completed"}
        verdict = check(
            Records(
                orders=orders,
                seeded=seeded,
                sagas=await read_sagas(reader.redis, reader.keys, list(orders)),
                ledgers=await snapshot(settings),
                dead_letters=await asyncio.to_thread(read_dead_letters, settings),
                invalid_sent=set(),
            )
        )
        assert verdict.violations == []
        for sid in orders:  # the orchestrator applied each reply once
            applied = [h for h in await reader.history(sid) if h["outcome"] == "applied"]
            assert len(applied) == 5, (sid, applied)
        # a re-sent reply is the stored one: the same message, whatever the copy
        replies = payment_replies(await read_to_end(settings, settings.events_topic))
        assert set(replies) == {f"{sid}:process_payment:action:1" for sid in orders}
        for cid, rs in replies.items():
            assert isinstance(rs[0], StepCompleted) and all(r == rs[0] for r in rs), cid

        async def committed_to_end() -> bool:
            consumer = kafka.consumer(settings, group_id=group_id(settings.key_prefix, "payment"))
            async with kafka.started(consumer):
                own = settings.command_topic_of("payment")  # what the payment workers read
                ends = await end_offsets(settings, own)
                tps = [TopicPartition(own, p) for p in ends]
                got = [await consumer.committed(tp) for tp in tps]
            return got == list(ends.values())

        await wait_for(committed_to_end, 60, "payment's offsets committed to the end", 0.5)
    finally:
        if payment.poll() is None:
            stop(payment)
