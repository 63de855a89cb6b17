"""The invariant checker of a chaos run.

It reads what the system itself recorded: each saga's hash (state, and the notification step's
status), the four workers' own records (`participants.samples.order.workers.read_ledgers`:
stock, reservations, the payment ledger, shipments, the notification outbox) and the dead-letter
topic. `check` is a pure function of those, so a test can hand it a broken ledger.

A saga in `needs_intervention` stopped half-way by design (a compensation kept failing): for it
only the rules that hold at every moment are checked (one charge, one refund, stock conserved).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import cast

from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from redis.asyncio import Redis

from infra import kafka
from orchestrator.engine.keys import Keys
from participants.samples.order.workers import Ledgers
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, H_ERROR_MESSAGE, H_SOURCE, header
from scripts.chaos_kit.traffic import Order

FINAL = ("completed", "failed", "needs_intervention")
#: the notification step: `<status> a=<attempts> ...` (and the older layout's `.status` field)
NOTIFY_STEP = "step.send_confirmation"
#: its status among the fields `statecodec.logical_fields` shows (what tests read)
NOTIFY_STATUS = NOTIFY_STEP + ".status"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Saga:
    #: None: Redis holds no saga for the order
    state: str | None
    #: the status of the notification step (its compensation sends the cancellation notice)
    notification: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    key: str
    source: str
    reason: str


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str


@dataclass(frozen=True)
class Records:
    """What a run left behind, as read after it."""

    orders: Mapping[str, Order]
    seeded: Mapping[str, int]
    sagas: Mapping[str, Saga]
    ledgers: Ledgers
    dead_letters: Sequence[DeadLetter]
    invalid_sent: set[str]

    def state(self, saga_id: str) -> str | None:
        saga = self.sagas.get(saga_id)
        return saga.state if saga else None


@dataclass
class Verdict:
    states: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    def add(self, found: Iterable[Violation]) -> None:
        self.violations.extend(found)

    def by_kind(self) -> Counter[str]:
        return Counter(v.kind for v in self.violations)


def check(r: Records) -> Verdict:
    """Every violation of the business invariants in what was read."""
    verdict = Verdict(states=Counter(r.state(sid) or "missing" for sid in r.orders))
    for rule in (_final, _payments, _stock, _shipments, _notifications, _dead_letters):
        verdict.add(rule(r))
    return verdict


def _final(r: Records) -> Iterable[Violation]:
    for sid in r.orders:
        if (s := r.state(sid)) is None:
            yield Violation("lost order", f"{sid}: acknowledged by Kafka, no saga in Redis")
        elif s not in FINAL:
            yield Violation("not final", f"{sid} is still {s}")


def _payments(r: Records) -> Iterable[Violation]:
    kinds = Counter((e["type"], e["sagaId"]) for e in r.ledgers.payments)
    for (kind, sid), n in sorted(kinds.items()):
        if n > 1:
            yield Violation(f"double {kind}", f"{sid}: {n} {kind}s in the payment ledger")
        if sid not in r.orders:
            yield Violation("payment for no order", f"a {kind} for {sid}")
    net = r.ledgers.net_paid()
    for sid, order in r.orders.items():
        paid, state = net.get(sid, ZERO), r.state(sid)
        if state == "completed" and paid != order.amount:
            yield Violation("wrong amount kept", f"{sid} completed, {paid} kept of {order.amount}")
        if state == "failed" and paid != ZERO:
            yield Violation("wrong amount kept", f"{sid} failed, {paid} kept (want 0)")


def _stock(r: Records) -> Iterable[Violation]:
    led = r.ledgers
    for p in sorted({*r.seeded, *led.stock, *led.reserved}):
        if led.total_units(p) != r.seeded.get(p, 0):
            yield Violation(
                "stock not conserved",
                f"{p}: {led.stock.get(p, 0)} available + {led.reserved.get(p, 0)} reserved, "
                f"seeded {r.seeded.get(p, 0)}",
            )
    held: Counter[str] = Counter()
    for sid, res in sorted(led.reservations.items()):
        if res["status"] != "reserved":
            continue
        held.update({p: int(q) for p, q in res["items"].items()})
        if r.state(sid) not in ("completed", "needs_intervention"):
            yield Violation("reservation kept", f"{sid} is {r.state(sid)}, holds {res['items']}")
    for p in sorted({*held, *led.reserved}):
        if held[p] != led.reserved.get(p, 0):
            yield Violation(
                "reserved count off", f"{p}: {led.reserved.get(p, 0)} reserved, {held[p]} held"
            )
    for sid, order in r.orders.items():
        got = led.reservations.get(sid)
        if r.state(sid) != "completed":
            continue
        if got is None or got["status"] != "reserved":
            yield Violation("completed order not reserved", f"{sid}: {got}")
        elif got["items"] != order.items:
            yield Violation("wrong reservation", f"{sid}: {got['items']} for {order.items}")


def _shipments(r: Records) -> Iterable[Violation]:
    live = {sid for sid, doc in r.ledgers.shipments.items() if doc["status"] == "created"}
    for sid in r.orders:
        if r.state(sid) == "completed" and sid not in live:
            yield Violation("completed order not shipped", sid)
    for sid in sorted(live):
        if r.state(sid) not in ("completed", "needs_intervention"):
            yield Violation("live shipment", f"{sid} is {r.state(sid)} but its shipment lives")


def _notifications(r: Records) -> Iterable[Violation]:
    kinds = Counter((n["type"], n["sagaId"]) for n in r.ledgers.notifications)
    for (kind, sid), n in sorted(kinds.items()):
        if n > 1:
            yield Violation("duplicate notification", f"{sid}: {n} x {kind}")
        if sid not in r.orders:
            yield Violation("notification for no order", f"a {kind} for {sid}")
    for sid in r.orders:
        confirmed = kinds[("OrderConfirmation", sid)]
        cancelled = kinds[("CancellationNotice", sid)]
        said = f"{confirmed} confirmation(s), {cancelled} cancellation notice(s)"
        if r.state(sid) == "completed" and (confirmed, cancelled) != (1, 0):
            yield Violation("wrong notifications", f"{sid} completed: {said}")
        if r.state(sid) == "failed":
            # the notice is the notification step's compensation: it is sent exactly when that
            # step was compensated, and a confirmation of a failed order must be followed by one
            want = int(r.sagas[sid].notification == "compensated")
            if cancelled != want or confirmed > cancelled:
                yield Violation("wrong notifications", f"{sid} failed: {said}")


def _dead_letters(r: Records) -> Iterable[Violation]:
    for d in r.dead_letters:
        if d.key not in r.invalid_sent:
            detail = f"key {d.key!r} by {d.source}: {d.reason}"
            yield Violation("valid record dead-lettered", detail)
    for key in sorted(r.invalid_sent - {d.key for d in r.dead_letters}):
        yield Violation("invalid record not dead-lettered", key)


# --- reading ------------------------------------------------------------------------------------


async def read_sagas(redis: Redis, keys: Keys, saga_ids: Sequence[str]) -> dict[str, Saga]:
    """The state and notification-step status of each saga, in pipelined chunks."""
    out: dict[str, Saga] = {}
    for i in range(0, len(saga_ids), 500):
        chunk = saga_ids[i : i + 500]
        async with redis.pipeline(transaction=False) as p:
            for sid in chunk:
                p.hmget(keys.saga(sid), ["state", NOTIFY_STEP, NOTIFY_STATUS])
            rows = await p.execute()
        for sid, (state, step, old) in zip(chunk, rows, strict=True):
            status = step.split(" ", 1)[0] if step else old
            out[sid] = Saga(state, status if status or state is None else "pending")
    return out


def read_dead_letters(settings: Settings, timeout_s: float = 30) -> list[DeadLetter]:
    """Every record in the dead-letter topic, from the first offset to the last (blocking)."""
    group = f"chaos-dlq-reader-{uuid.uuid4().hex[:8]}"  # assigned, never committed
    consumer = kafka.sync_consumer(settings, group, log_level=2)
    try:
        topic = settings.dlq_topic
        meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in meta.partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        waiting = {p for p, end in ends.items() if end > 0}
        found: list[DeadLetter] = []
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            headers = cast(list[tuple[str, bytes]], msg.headers() or [])
            found.append(
                DeadLetter(
                    key=(msg.key() or b"").decode(errors="replace"),
                    source=header(headers, H_SOURCE) or "?",
                    reason=f"{header(headers, H_ERROR_CLASS)}: {header(headers, H_ERROR_MESSAGE)}",
                )
            )
            if (msg.offset() or 0) + 1 >= ends[msg.partition()]:
                waiting.discard(msg.partition())
        if waiting:
            raise TimeoutError(f"could not read the dead-letter topic within {timeout_s:g} s")
        return found
    finally:
        consumer.close()
