"""Effectively once with duplicated commands and replies, against the sample workers (built on
the SDK) and the orchestrator: every participant command on saga-commands is produced again with
the same message id, before its worker first ran, while the sagas run, and after they finished;
every reply on saga-events too. Each order keeps exactly one charge, one reservation and one
shipment in the workers' own Redis records, no saga applies anything twice, all are final."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

from redis.asyncio import Redis

from infra import redis as redis_factory
from orchestrator.core.definition import Registry
from orchestrator.engine.daemon import Orchestrator
from participants.config import WorkerOptions
from participants.keys import SdkKeys, group_id
from participants.samples.faults import inject as faults
from participants.samples.order.config import OrderConfig
from participants.samples.order.workers import build_all, seed_stock, snapshot
from participants.worker import Worker
from schemas.config import Settings
from schemas.messages import SagaCommand
from scripts.chaos_kit import check
from scripts.chaos_kit.traffic import Order
from tests.conftest import BOTH_REDIS
from tests.support.kafka import produce, wait_for
from tests.support.offsets import end_offsets, wait_committed_to_end
from tests.support.orch import SagaReader, running
from tests.support.sagas_patient import ORDER_PATIENT
from tests.support.tap import Record, Tap, reidentified

pytestmark = BOTH_REDIS  # on the single Redis and on the Redis Cluster

STOCK = {"dup-a": 100, "dup-b": 100}
LIMIT = Decimal("500")  # payments above it are declined (non-retryable)
STEPS = ("reserve_inventory", "process_payment", "create_shipment", "send_confirmation")


def make_orders() -> dict[str, Order]:
    """20 orders that complete, 3 declined by payment (above LIMIT), 2 out of stock; 2 of the
    completing ones fail at notification (fail-next), so every compensation runs somewhere."""
    orders = {}
    for i in range(25):
        sid = f"dupc-{i:02d}"
        items = {"dup-a": 1 + i % 3} if i % 2 else {"dup-a": 1, "dup-b": 2}
        amount = Decimal("20.00") + i
        if i in (3, 11, 19):
            amount = LIMIT + 100 + i
        if i in (7, 15):
            items = {"dup-b": 1000}
        orders[sid] = Order(sid, f"c-{i % 5}", items, amount)
    return orders


@contextlib.asynccontextmanager
async def workers(settings: Settings) -> AsyncIterator[list[Worker]]:
    """The four sample workers, as `saga participant run all` builds them, in this loop."""
    stop = asyncio.Event()
    config = OrderConfig(payment_limit=LIMIT, participant_http_port=None)
    crew = [Worker(settings, p, WorkerOptions(), stop) for p in build_all(config)]
    tasks = [asyncio.create_task(w.run()) for w in crew]
    try:
        yield crew
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def saga_records(
    reader: SagaReader, ids: list[str]
) -> dict[str, tuple[dict[str, str], list[dict[str, str]]]]:
    return {sid: (await reader.fields(sid), await reader.history(sid)) for sid in ids}


def replayed(crew: list[Worker]) -> int:
    """Commands the workers answered from a stored outcome (never run again)."""
    return sum(w.stats.replayed for w in crew)


async def quiet(
    settings: Settings,
    orch: Orchestrator,
    crew: list[Worker],
    tap: Tap,
    copies: int,
    reidentified: int = 0,
) -> None:
    """Wait until every copy reached its worker and every reply the orchestrator, and every
    consumer group committed the end of its topics; then count exactly. `reidentified`:
    replies re-sent under a new id for an attempt already answered (duplicates by the state,
    recorded once in the history as ignored)."""
    topics = [settings.commands_topic, settings.events_topic]

    async def answered() -> bool:
        return replayed(crew) >= copies

    await wait_for(answered, 120, f"the workers to answer {copies} copies from stored outcomes")
    await wait_committed_to_end(settings, orch.s.group, topics, timeout_s=120)
    for w in crew:
        group = group_id(settings.key_prefix, w.participant.name)
        own = settings.command_topic_of(w.participant.name)  # the topic its workers read
        await wait_committed_to_end(settings, group, [own], timeout_s=120)
    # every command ran once; each copy was answered from its stored outcome ...
    assert sum(w.stats.handled for w in crew) == len(tap.commands)
    assert replayed(crew) == copies, (replayed(crew), copies)
    # ... with the stored reply (same id), which the orchestrator counted as a duplicate, as it
    # did each copied reply and each reply re-sent under a new id: nothing else was a duplicate
    want = tap.copied_replies + copies + reidentified
    assert orch.metrics.duplicates == want, (orch.metrics.duplicates, want)


async def test_duplicated_commands_and_replies_apply_once(
    settings: Settings, reader: SagaReader
) -> None:
    """Commands copied before their worker ran, while sagas run and after they finished, and
    replies copied the same way: one charge, one reservation, one shipment per order in the
    workers' records, every saga final with exactly the transitions it would have had, the
    late copies changing nothing, and a reply re-sent under a new id recorded as ignored."""
    orders = make_orders()
    ids = list(orders)
    await seed_stock(settings, STOCK)
    redis: Redis = redis_factory.client(settings, decode=True)
    await faults.fail_next(redis, SdkKeys(settings.key_prefix, "notification"), 2, retryable=False)
    await redis.aclose()
    async with Tap(settings) as tap, running(settings, Registry([ORDER_PATIENT])) as orch:
        # 1. before: every first command (ReserveItems) is copied while no worker runs yet,
        # so the copy sits in the log before the worker handles the original
        starts: list[tuple[bytes | None, bytes]] = [
            (s.encode(), o.record()) for s, o in orders.items()
        ]
        await produce(settings, settings.commands_topic, starts)

        async def all_reserves() -> bool:
            return len(tap.commands) == len(ids)

        await wait_for(all_reserves, 60, "a ReserveItems command for every order")
        firsts = [r.message for r in tap.commands.values()]
        assert all(isinstance(c, SagaCommand) and c.command_type == "ReserveItems" for c in firsts)
        copies = await tap.copy(list(tap.commands.values()))
        # 2. while running: every new command and reply is copied the moment it appears
        tap.echo = True
        async with workers(settings) as crew:
            states = await reader.wait_final(ids, timeout_s=120)
            await tap.stop_echo()
            copies += tap.copied_commands
            await quiet(settings, orch, crew, tap, copies)
            assert tap.copied_commands > 0 and tap.copied_replies > 0
            ledgers = await snapshot(settings)
            before = await saga_records(reader, ids)

            # 3. after: every command and every reply again, and each saga's first reply
            # under a new message id
            copies += await tap.copy(list(tap.commands.values()))
            tap.copied_replies += await tap.copy(list(tap.replies.values()))
            first_reply: dict[str, Record] = {}
            for rec in tap.replies.values():
                first_reply.setdefault(rec.saga_id, rec)
            assert set(first_reply) == set(ids)
            await tap.copy([reidentified(r) for r in first_reply.values()])
            await quiet(settings, orch, crew, tap, copies, reidentified=len(first_reply))
            after = await saga_records(reader, ids)
            assert await snapshot(settings) == ledgers, "a late copy changed a worker's records"

    # the outcome the orders call for
    tally = Counter(states.values())
    assert tally == Counter(completed=18, failed=7), tally
    for sid in ("dupc-03", "dupc-11", "dupc-19", "dupc-07", "dupc-15"):
        assert states[sid] == "failed", sid

    # the workers' own records: one of each per order, nothing for what never happened
    verdict = check.check(
        check.Records(
            orders=orders,
            seeded=STOCK,
            sagas={
                sid: check.Saga(f["state"], f.get(check.NOTIFY_STATUS))
                for sid, (f, _) in before.items()
            },
            ledgers=ledgers,
            dead_letters=[],
            invalid_sent=set(),
        )
    )
    assert verdict.violations == [], verdict.violations
    charges = Counter(e["sagaId"] for e in ledgers.payments if e["type"] == "charge")
    refunds = Counter(e["sagaId"] for e in ledgers.payments if e["type"] == "refund")
    for sid, state in states.items():
        reservation = ledgers.reservations.get(sid)
        if state == "completed":
            assert charges[sid] == 1 and refunds[sid] == 0, sid
            assert reservation is not None and reservation["status"] == "reserved", sid
            assert reservation["items"] == orders[sid].items, sid
            assert ledgers.shipments[sid]["status"] == "created", sid
        else:
            assert charges[sid] == refunds[sid] <= 1, sid
            assert reservation is None or reservation["status"] == "released", sid
            assert sid not in ledgers.shipments or ledgers.shipments[sid]["status"] != "created"
    assert sum(refunds.values()) == 2  # the two that failed at notification

    # the sagas: exactly the transitions they would have had without a single copy (a copy
    # under the id already in the history is counted, never recorded); the late copies changed
    # nothing; the reply under a new id is in the history once, ignored
    for sid in ids:
        fields, history = before[sid]
        assert len(history) == int(fields["version"]), (sid, history)
        assert all(h["outcome"] == "applied" for h in history), (sid, history)
        if states[sid] == "completed":
            assert fields["version"] == "5", sid
        fields_after, history_after = after[sid]
        assert fields_after == fields, sid
        assert history_after[: len(history)] == history, sid
        extra = history_after[len(history) :]
        assert len(extra) == 1 and extra[0]["outcome"] == "ignored", (sid, extra)
        assert extra[0]["input"] == f"{first_reply[sid].message_id}:again", (sid, extra)
    assert orch.metrics.duplicate_starts == 0
    ends = await end_offsets(settings, [settings.dlq_topic])
    assert set(ends.values()) == {0}, f"records in the dead-letter topic: {ends}"
