"""Background duties of one elected orchestrator copy: fire due timers, re-publish outbox
entries a crash left behind, and trim the state indexes of expired sagas.

Election is a Redis lease (SET NX PX, renewed by the holder). Two copies briefly both
believing they lead is harmless: timer events carry deterministic ids and commands carry
deterministic command ids, so duplicates are deduplicated downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from orchestrator.config import OrchestratorSettings
from orchestrator.core.model import FINAL, parse_timer_member
from orchestrator.engine.store import RedisStore
from orchestrator.engine.translate import timer_record
from orchestrator.telemetry.metrics import Metrics

log = logging.getLogger("orchestrator.engine.relay")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class Relay:
    def __init__(
        self,
        settings: OrchestratorSettings,
        store: RedisStore,
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
        metrics: Metrics,
    ) -> None:
        self.s = settings
        self.store = store
        self.producer = producer
        self.stop = stop
        self.metrics = metrics
        self.me = uuid.uuid4().hex
        self._lease = store.redis.register_script(_RENEW)
        self._last_trim = 0.0

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                if await self.lead():
                    busy = await self.tick()
                    if busy:
                        continue
            except (TimeoutError, RedisError, KafkaError, OSError) as exc:
                log.warning("relay: %s: %s; retrying", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.s.timer_poll_interval_s)

    async def lead(self) -> bool:
        lease_ms = int(self.s.leader_lease_s * 1000)
        return bool(await self._lease(keys=[self.store.keys.leader], args=[self.me, lease_ms]))

    async def tick(self) -> bool:
        """One round; True when there may be more work right away."""
        fired = await self.fire_timers()
        republished = await self.republish_outbox()
        if time.monotonic() - self._last_trim > 60:
            await self.trim_indexes()
            self._last_trim = time.monotonic()
        return fired >= 1000 or republished >= 500

    async def fire_timers(self) -> int:
        members = await self.store.due_timers(int(time.time() * 1000), 1000)
        if not members:
            return 0
        futures: list[Any] = []
        for m in members:
            parsed = parse_timer_member(m)
            if parsed is None:
                log.error("dropping a timer this version cannot read: %r", m)
                continue
            saga_id, due = parsed
            key, value, headers = timer_record(saga_id, m, due, self.s.output_format)
            futures.append(
                await self.producer.send(self.s.events_topic, value, key, headers=headers)
            )
        await asyncio.gather(*futures)
        await self.store.remove_timers(members)
        self.metrics.timers_fired += len(futures)
        return len(members)

    async def republish_outbox(self) -> int:
        age_ms = int(self.s.outbox_sweep_age_s * 1000)
        entries = await self.store.outbox_older_than(age_ms, 500)
        if not entries:
            return 0
        futures = [
            await self.producer.send(self.s.commands_topic, e.value, e.key, headers=e.headers)
            for _, e in entries
        ]
        await asyncio.gather(*futures)
        await self.store.outbox_delete([rid for rid, _ in entries])
        self.metrics.outbox_republished += len(entries)
        log.info("re-published %d commands left in the outbox", len(entries))
        return len(entries)

    async def trim_indexes(self) -> None:
        """Final sagas expire after the retention time; drop their index entries too."""
        if self.s.retention_s <= 0:
            return
        cutoff = int(time.time() * 1000) - self.s.retention_s * 1000
        for status in FINAL:
            await self.store.redis.zremrangebyscore(
                self.store.keys.index(status.value), "-inf", cutoff
            )
