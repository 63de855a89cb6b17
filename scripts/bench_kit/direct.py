"""Parking sagas without Kafka: the daemon's own code, fed StartSaga records built in memory.

Parking a million sagas through Kafka runs at the orchestrator's pace (a few hundred starts a
second on two cores, about an hour). What a parked saga leaves in Redis does not depend on how
its start arrived, so this path skips the broker and nothing else:

    StartSaga bytes (as `load.Loader` produces them, headers included)
      -> Orchestrator.decode        the daemon's decode and start mapping
      -> Orchestrator.apply         load, decide(), one step.lua per saga, pipelined
      -> outbox entries deleted     what the daemon's publisher does once Kafka acked them

The commands the step queued go to the silent participant, which never reads them: treating
them as acked changes nothing anyone can observe except that they are not on the commands
topic. `tests/test_bench_park.py` parks one saga each way and compares what they leave (hash,
history, timers, state index, outbox), times and ids aside.

The records carry the partition Kafka's default partitioner would give the saga's key and an
offset of their own, as a consumer would see them; the Orchestrator is built but never run (no
consumer, producer or relay), on the settings the bench's orchestrator process reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from aiokafka import ConsumerRecord

from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.engine.daemon import Orchestrator
from orchestrator.engine.keys import Keys, partition_of
from orchestrator.engine.sagas import load_sagas
from orchestrator.engine.store import RedisStore
from orchestrator.ops.kafka import message_headers
from schemas import codec
from schemas.messages import StartSaga
from scripts.bench_kit.fleet import BenchError
from scripts.bench_kit.load import Loader, order_data
from scripts.bench_kit.memory import Room
from scripts.bench_kit.modes import PROGRESS_S
from scripts.bench_kit.parked import PARKED_TYPE

#: starts per round trip: the daemon's own batch size (SAGA_BATCH_MAX_RECORDS) caps it
CHUNK = 2000


class ParkError(Exception):
    """A start was not parked (dead-lettered, a duplicate, or the saga finished); says which."""


def start_record(settings: OrchestratorSettings, sid: str, saga_type: str, data: dict[str, Any],
                 offset: int) -> ConsumerRecord[bytes, bytes]:  # fmt: skip
    """The record a consumer of the commands topic would get for this StartSaga."""
    msg = StartSaga(saga_id=sid, correlation_id=sid, saga_type=saga_type, data=data)
    value, key = codec.encode(msg), sid.encode()
    return ConsumerRecord(
        topic=settings.commands_topic,
        partition=partition_of(sid, settings.topic_partitions),
        offset=offset,
        timestamp=int(time.time() * 1000),
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=message_headers(msg),
    )


class DirectParker:
    """Parks sagas of `saga_type` with the daemon's decode, decide and step."""

    def __init__(self, settings: OrchestratorSettings, saga_type: str) -> None:
        self.s = settings
        self.saga_type = saga_type
        sagas = load_sagas(settings.saga_modules)
        if saga_type not in sagas.registry:
            raise ParkError(f"saga type {saga_type!r} is not in {settings.saga_modules}")
        self.orch = Orchestrator(settings, sagas)
        # as Orchestrator.run builds them; nothing else of run() is used
        self.redis = redis_factory.client(settings)
        self.store = RedisStore(
            self.redis,
            Keys.of(settings),
            sagas.registry,
            settings.retention_s,
            settings.tombstone_retention_s,
        )
        self.orch.redis, self.orch.store = self.redis, self.store
        self.offset = 0

    async def aclose(self) -> None:
        await self.store.aclose()
        await self.redis.aclose()

    async def park(self, ids: list[str], data: dict[str, dict[str, Any]]) -> None:
        """Park one chunk (at most the daemon's batch size): every id must end up written,
        waiting on its first step, with its commands out of the outbox."""
        records = [self._record(sid, data[sid]) for sid in ids]
        inputs, poison = await self.orch.decode(records)
        writes, more = await self.orch.apply(inputs)
        if poison or more:
            p = (poison + more)[0]
            raise ParkError(f"{len(poison + more)} starts dead-lettered, e.g. {p.reason}")
        if len(writes) != len(ids):
            raise ParkError(f"{len(ids) - len(writes)} of {len(ids)} starts were duplicates")
        for _inp, w in writes:
            t = w.transition
            if t.outcome != "applied" or t.state is None or not w.outbox_ids:
                raise ParkError(f"saga {w.saga_id} did not park: {t.outcome}, {t.note}")
        # what Publisher.publish does once Kafka acked the commands
        await self.store.outbox_delete_written(
            [(w.saga_id, oid) for _inp, w in writes for oid in w.outbox_ids]
        )

    def _record(self, sid: str, data: dict[str, Any]) -> ConsumerRecord[bytes, bytes]:
        self.offset += 1
        return start_record(self.s, sid, self.saga_type, data, self.offset)


def chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


async def park(settings: OrchestratorSettings, loader: Loader, n: int) -> dict[str, Any]:
    """Park `n` sagas of the bench's parked type, a chunk per round trip, with Redis's memory
    checked as they land; the same figures as `modes.Parking` (the Kafka path)."""
    room = await Room.of(loader.redis)
    ids = loader.new_ids("park", n)
    parker = DirectParker(settings, PARKED_TYPE)
    t0 = last_print = time.monotonic()
    done = 0
    try:
        for chunk in chunks(ids, min(CHUNK, settings.batch_max_records)):
            await parker.park(chunk, {sid: order_data(sid) for sid in chunk})
            done += len(chunk)
            await room.check(loader.redis, done, n)
            if time.monotonic() - last_print > PROGRESS_S:
                print(f"  parking (direct): {done}/{n} in flight", flush=True)
                last_print = time.monotonic()
    except ParkError as exc:
        raise BenchError(f"parking: {exc}") from None
    finally:
        await parker.aclose()
    park_s = time.monotonic() - t0
    return {"in_flight": n, "park": "direct", "park_s": round(park_s, 1),
            "park_per_s": round(n / park_s), "ids": ids}  # fmt: skip
