"""scripts/bench --in-flight, direct parking: a saga parked with the daemon's own code straight
into Redis leaves exactly what one parked through Kafka and the running orchestrator leaves
(its keys, hash, history, timers, state index, nothing in the outbox), times and ids aside;
a start that would not park is a clear error, never a silent miscount."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from infra import redis as redis_factory
from orchestrator.engine import topics
from orchestrator.engine.keys import Keys
from orchestrator.engine.sagas import load_sagas
from orchestrator.engine.statecodec import from_iso
from schemas.config import Settings
from scripts.bench_kit import parked
from scripts.bench_kit.direct import DirectParker, ParkError
from scripts.bench_kit.load import Loader, order_data
from tests.conftest import BOTH_REDIS
from tests.support.kafka import wait_for
from tests.support.orch import orchestrator_settings, running

pytestmark = BOTH_REDIS

MODULES = orjson.loads(parked.MODULES)
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")
TRACE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]")
#: a Redis Cluster's hash tag: two sagas may hash to different shards
SHARD = re.compile(r"\{p\d+\}")


class Snapshot:
    """Everything in Redis that belongs to one saga, with its id, its start's id, its trace,
    its shard and its wall-clock times replaced by placeholders (times that matter are kept
    relative to the saga's creation)."""

    def __init__(self, settings: Settings) -> None:
        self.redis = redis_factory.client(settings, decode=True)
        self.keys = Keys.of(settings)

    async def aclose(self) -> None:
        await self.redis.aclose()

    def _plain(self, text: str, sid: str, start_id: str) -> str:
        text = text.replace(sid, "<saga>")
        text = text.replace(start_id, "<start>") if start_id else text
        return SHARD.sub("{p}", TRACE.sub("<trace>", ISO.sub("<time>", text)))

    async def of(self, sid: str) -> dict[str, Any]:
        r, k = self.redis, self.keys
        raw = await r.hgetall(k.saga(sid))
        assert raw, f"saga {sid} has no hash"
        start_id = raw.get("start_input", "")
        created = from_iso(raw["created_at"])

        def plain(text: str) -> str:
            return self._plain(text, sid, start_id)

        # the engine's own lists of a saga's keys and of the shared keys that may hold an
        # entry of it (what its memory figures are summed over); no SCAN of a big keyspace
        own = [key for key in k.owned(sid).values() if await r.exists(key)]
        shared = k.shared_per_saga(sid).values()
        history = [plain(e) for e in await r.lrange(k.history(sid), 0, -1)]
        timers = {
            plain(f"{key} {member}"): int(score) - created
            for key in shared
            if key.endswith("_timers")
            for member, score in await r.zrange(key, 0, -1, withscores=True)
            if sid in member
        }
        indexes = {}
        for key in shared:
            score = await r.zscore(key, sid) if ":_index:" in key else None
            if score is not None:
                indexes[plain(key)] = int(score) - created
        outbox = [
            e
            for key in shared
            if key.endswith("_outbox")
            for _id, e in await r.xrange(key, "-", "+")
            if sid in orjson.dumps(e).decode()
        ]
        return {
            "keys": [plain(key) for key in own],
            "ttl": {plain(key): await r.ttl(key) for key in own},
            "hash": {f: plain(v) for f, v in raw.items()},
            "history": history,
            "timers": timers,
            "indexes": indexes,
            "outbox": outbox,
        }


async def test_direct_parking_leaves_what_kafka_parking_leaves(settings: Settings) -> None:
    """One saga parked through Kafka by the running orchestrator, one parked directly: the
    same keys, hash, history, timer (due a day after creation), state index entry, and no
    command left in the outbox."""
    via_kafka, direct = "park00000001", "park00000002"
    sagas = load_sagas(MODULES)
    # the participant command topics, as `saga orchestrator run` creates them at start
    topics.ensure(settings, topics.registry_topics(settings, sagas.registry))
    snap = Snapshot(settings)
    loader = Loader(settings)
    try:
        async with running(settings, sagas):
            loader.start_saga(via_kafka, parked.PARKED_TYPE)
            await loader.flush()

            async def parked_and_published() -> bool:
                state = await snap.redis.hget(snap.keys.saga(via_kafka), "state")
                outbox = snap.keys.shared_per_saga(via_kafka)["outbox"]
                return state is not None and await snap.redis.xlen(outbox) == 0

            await wait_for(parked_and_published, 60, "the saga parked through Kafka")
            s = orchestrator_settings(settings, saga_modules=MODULES)
            parker = DirectParker(s, parked.PARKED_TYPE)
            try:
                await parker.park([direct], {direct: order_data(direct)})
            finally:
                await parker.aclose()
        a, b = await snap.of(via_kafka), await snap.of(direct)
        assert a == b
        # and the comparison looked at a parked saga, not at two empty shells
        assert a["hash"]["type"] == parked.PARKED_TYPE and a["outbox"] == []
        ((timer, due),) = a["timers"].items()
        assert timer.endswith(" <saga>|timeout|reserve_inventory|1|a") and due == 86_400_000
        # a saga that only started keeps no history list: its start is in the hash
        assert a["history"] == [] and a["hash"]["start_input"] == "<start>"
        start_input = await snap.redis.hget(snap.keys.saga(via_kafka), "start_input")
        assert start_input.startswith("StartSaga ")
        ((index, _entered),) = a["indexes"].items()
        assert index.endswith(f"_index:{a['hash']['state']}")
    finally:
        await loader.aclose()
        await snap.aclose()


async def test_a_start_that_does_not_park_is_an_error(settings: Settings) -> None:
    """A saga id parked twice (the core ignores the second start) and an unknown saga type are
    ParkErrors that say so; nothing is counted as parked that is not."""
    s = orchestrator_settings(settings, saga_modules=MODULES)
    with pytest.raises(ParkError, match="'no_such_type' is not in"):
        DirectParker(s, "no_such_type")
    parker = DirectParker(s, parked.PARKED_TYPE)
    try:
        sid = "park00000003"
        await parker.park([sid], {sid: order_data(sid)})
        with pytest.raises(ParkError, match="park00000003 did not park: ignored, start for exi"):
            await parker.park([sid], {sid: order_data(sid)})
    finally:
        await parker.aclose()
