"""One batch, one saga: two inputs for the same saga in one batch are never written over
another writer's change. A second writer bumps the saga's version between the daemon's load
and its write (deterministically, from inside the store's write call); the first input loses
the version race, and the second must be re-decided on the reloaded saga, not written on top
of the other writer's version."""

from __future__ import annotations

from typing import Any

import pytest

from infra import redis as redis_factory
from orchestrator.core.definition import Registry
from orchestrator.engine.daemon import Orchestrator
from orchestrator.engine.keys import Keys
from orchestrator.engine.store import RedisStore, Write, WriteResult
from schemas import codec
from schemas.config import Settings
from schemas.messages import StepCompleted
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.sagas_patient import ORDER_PATIENT
from tests.test_orchestrator_e2e import start_order


def completed(saga_id: str, step: str, command: str) -> bytes:
    cid = f"{saga_id}:{step}:action:1"
    return codec.encode(
        StepCompleted(
            message_id=f"{cid}:reply",
            saga_id=saga_id,
            saga_type="order_fulfillment",
            step=step,
            attempt=1,
            command_id=cid,
            command_type=command,
            result={"by": "test"},
        )
    )


async def test_a_conflict_makes_the_sagas_later_inputs_of_the_batch_re_decided(
    settings: Settings, reader: SagaReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replies for one saga arrive in one batch; another writer moves the saga's version
    between load and write. The first reply conflicts; the second is not written over the
    other writer's version: both are reloaded, re-decided and applied once each, in order,
    each write on the version the previous one left (versions go up by one)."""
    sid = "one-batch-1"
    registry = Registry([ORDER_PATIENT])  # no timeouts: only the test's inputs move the saga
    keys = Keys(settings.key_prefix)
    async with running(settings, registry):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])

        async def started() -> bool:
            return (await reader.fields(sid)).get("step.reserve_inventory.status") == "running"

        await wait_for(started, 30, "the saga to start")
    # both replies are in the log before the daemon reads again: one fetch, one batch
    replies = [
        completed(sid, "reserve_inventory", "ReserveItems"),
        completed(sid, "process_payment", "ProcessPayment"),
    ]
    await produce(settings, settings.events_topic, [(sid.encode(), v) for v in replies])

    other_writer = redis_factory.client(settings)
    batches: list[list[bytes]] = []
    writes: list[tuple[int, str]] = []  # (expected version, result) of the saga's writes
    real_handle, real_apply = Orchestrator.handle, RedisStore.apply

    async def handle(self: Orchestrator, records: list[Any]) -> None:
        batches.append([r.value for r in records if r.key == sid.encode()])
        await real_handle(self, records)

    async def apply(self: RedisStore, batch: list[Write]) -> list[WriteResult]:
        if not writes and any(w.saga_id == sid for w in batch):
            await other_writer.hincrby(keys.saga(sid), "version", 1)  # between load and write
        results = await real_apply(self, batch)
        writes.extend(
            (w.expected_version, r.status)
            for w, r in zip(batch, results, strict=True)
            if w.saga_id == sid
        )
        return results

    monkeypatch.setattr(Orchestrator, "handle", handle)
    monkeypatch.setattr(RedisStore, "apply", apply)
    try:
        async with running(settings, registry):

            async def both_applied() -> bool:
                fields = await reader.fields(sid)
                return fields.get("step.process_payment.status") == "completed"

            await wait_for(both_applied, 30, "both replies to be applied")
    finally:
        await other_writer.aclose()
    assert replies in batches, f"the replies came in separate batches: {batches}"
    assert writes[0] == (1, "conflict"), writes
    applied = [v for v, status in writes if status == "ok"]
    assert applied == [2, 3], writes  # on the other writer's version 2, then on its own 3
    fields = await reader.fields(sid)
    assert fields["version"] == "4"  # start, the other writer, two replies
    assert fields["step.reserve_inventory.status"] == "completed"
    assert fields["current_step"] == "create_shipment"
    history = await reader.history(sid)
    events = [h["event"] for h in history if h["outcome"] == "applied"]
    assert events == ["StartOrder", "StepCompleted", "StepCompleted"], history
    inputs = [h["input"] for h in history if h["outcome"] == "applied"][1:]
    assert inputs == [
        f"{sid}:reserve_inventory:action:1:reply",
        f"{sid}:process_payment:action:1:reply",
    ], history
