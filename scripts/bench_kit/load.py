"""The load generator: saga starts produced the way the project's own producers send them, and
completions counted and timed from the sagas' own records in Redis.

Starts are StartOrder messages with the routing headers (`orchestrator.ops.kafka`), keyed by
saga id, through a confluent-kafka producer with linger 0 (so the generator adds no wait of its
own to a measured latency). Saga ids are `<kind><8 digits>` (`warm00000001`, `peak00000042`):
`memory` finds every key of a saga by its id. Completions are counted with the same query the
`saga` CLI uses (`SagaQuery.counts_by_state`); a saga's latency is its `updated_at` (written by
the step that finished it) minus the time its start was due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from confluent_kafka import KafkaError, Message

from infra import kafka
from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import from_iso
from orchestrator.ops.kafka import message_headers
from orchestrator.ops.query import SagaQuery
from participants.samples.order.saga import ORDER_FULFILLMENT
from schemas import codec
from schemas.config import Settings
from schemas.messages import Envelope, OrderItem, StartOrder, StartSaga
from scripts.bench_kit.fleet import BenchError

STEPS_PER_SAGA = len(ORDER_FULFILLMENT.steps)
FINAL = ("completed", "failed", "needs_intervention")
KINDS = ("warm", "idle", "peak", "open", "kill", "park")
#: how often counts are read while waiting (a few ZCARDs: nothing next to the load)
POLL_S = 0.01


def order(sid: str) -> StartOrder:
    return StartOrder(
        saga_id=sid,
        correlation_id=sid,
        order_id=sid,
        customer_id="cust-1",
        items=[
            OrderItem(product_id="sku-1", quantity=1),
            OrderItem(product_id="sku-2", quantity=2),
        ],
        amount=Decimal("42.50"),
        currency="USD",
        payment_method="card",
        shipping_address="1 Main St, Springfield",
    )


def order_data(sid: str) -> dict[str, Any]:
    """The data an order saga carries (what its commands carry too)."""
    return order(sid).order_data()


def pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Loader:
    """Produces starts on the commands topic and reads the sagas back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = kafka.sync_producer(
            settings, **{"enable.idempotence": True, "linger.ms": 0}
        )
        self.redis = redis_factory.client(settings, decode=True)
        self.keys = Keys(settings.key_prefix)
        self.query = SagaQuery(self.redis, self.keys)
        self.serial = 0
        self.produced = 0
        self.errors: list[str] = []

    async def aclose(self) -> None:
        await asyncio.to_thread(self.producer.flush, 30)
        await self.redis.aclose()

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))

    def new_ids(self, kind: str, n: int) -> list[str]:
        assert kind in KINDS
        first = self.serial
        self.serial += n
        return [f"{kind}{i:08d}" for i in range(first, first + n)]

    def send(self, msg: Envelope) -> None:
        value = codec.encode(msg)
        headers: list[tuple[str, str | bytes | None]] = [*message_headers(msg)]
        while True:
            try:
                self.producer.produce(
                    self.settings.commands_topic,
                    value,
                    msg.saga_id.encode(),
                    headers=headers,
                    on_delivery=self._delivered,
                )
                break
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.05)
        self.produced += 1

    def start(self, kind: str, n: int = 1) -> list[str]:
        """Produce `n` order starts now; returns their saga ids."""
        ids = self.new_ids(kind, n)
        for sid in ids:
            self.send(order(sid))
        self.poll()
        return ids

    def start_saga(self, sid: str, saga_type: str) -> None:
        """A StartSaga of another type, with an order's data."""
        self.send(StartSaga(saga_id=sid, correlation_id=sid, saga_type=saga_type,
                            data=order_data(sid)))  # fmt: skip

    def poll(self) -> None:
        self.producer.poll(0)
        if self.errors:
            raise BenchError(f"a start could not be produced: {self.errors[0]}")

    async def flush(self) -> None:
        left = await asyncio.to_thread(self.producer.flush, 60)
        if left:
            raise BenchError(f"{left} starts not acknowledged by Kafka within 60 s")
        self.poll()

    # ---- reading back ----
    async def counts(self) -> dict[str, int]:
        return await self.query.counts_by_state()

    async def finished(self) -> int:
        c = await self.counts()
        return sum(c.get(s, 0) for s in FINAL)

    async def completed(self) -> int:
        return (await self.counts()).get("completed", 0)

    async def wait_finished(self, target: int, timeout_s: float, what: str) -> None:
        """Until `target` sagas under the prefix are final, or a BenchError at the deadline."""
        deadline = time.monotonic() + timeout_s
        while (done := await self.finished()) < target:
            if time.monotonic() > deadline:
                c = await self.counts()
                raise BenchError(
                    f"{what}: only {done} of {target} sagas finished within {timeout_s:g} s "
                    f"(by state: {c})"
                )
            await asyncio.sleep(POLL_S * 5)

    async def final_times(
        self, ids: list[str], chunk: int = 2000
    ) -> dict[str, tuple[str, int, int]]:
        """(state, created ms, updated ms) of each saga, read from its hash."""
        out: dict[str, tuple[str, int, int]] = {}
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            async with self.redis.pipeline(transaction=False) as p:
                for sid in part:
                    p.hmget(self.keys.saga(sid), "state", "created_at", "updated_at")
                rows = await p.execute()
            for sid, (state, created, updated) in zip(part, rows, strict=True):
                if state and created and updated:
                    out[sid] = (state, from_iso(created), from_iso(updated))
        return out

    async def latencies_ms(self, due_ms: dict[str, float]) -> tuple[list[float], int]:
        """Due-to-finished latencies of sagas that finished, and how many had not."""
        times = await self.final_times(list(due_ms))
        lat = [
            times[s][2] - due for s, due in due_ms.items() if s in times and times[s][0] in FINAL
        ]
        return lat, len(due_ms) - len(lat)
