"""Background duties of one elected orchestrator copy: fire due timers, re-publish outbox
entries a crash left behind, and trim the state indexes of expired sagas.

Election is a Redis lease (SET NX PX, renewed by the holder). Two copies briefly both
believing they lead is harmless: timer events carry deterministic ids and commands carry
deterministic command ids, so duplicates are deduplicated downstream.

Nothing ends the relay but a stop: a round that fails (Redis or Kafka away, or a bug) is logged,
shown in `/readyz` and run again after a backoff. One timer or outbox entry that cannot be sent
holds up nothing else: it is retried on its own backoff (a timer is moved later in its sorted
set, an outbox entry is skipped until its time), and a command Kafka can never take (too large
for the topic) is dead-lettered and dropped. `last_ok_s` says when a round last finished, so the
daemon can report a relay that stopped making progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from infra.crashpoints import crash_point
from infra.errors import is_record_error, is_transient
from infra.retry import Backoff, Stopped, pause, retry
from orchestrator.config import OrchestratorSettings
from orchestrator.core.model import FINAL, parse_timer_member
from orchestrator.engine.publish import Publisher, Record, send_each
from orchestrator.engine.store import OutboxEntry, RedisStore
from orchestrator.engine.translate import timer_record
from orchestrator.telemetry.metrics import Metrics

log = logging.getLogger("orchestrator.engine.relay")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
TIMERS_PER_ROUND = 1000
OUTBOX_PER_ROUND = 500
#: outbox pages read past entries that wait for their own retry, per round
OUTBOX_PAGES = 10
#: how one failing timer or outbox entry is retried, on its own
ENTRY_BACKOFF = Backoff(initial_s=0.5, max_s=60.0)


@dataclass
class _Held:
    """An outbox entry that failed: how often, and not before when (monotonic) to try again."""

    failures: int
    not_before_s: float


class Relay:
    def __init__(
        self,
        settings: OrchestratorSettings,
        store: RedisStore,
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
        metrics: Metrics,
        publisher: Publisher | None = None,
    ) -> None:
        self.s = settings
        self.store = store
        self.producer = producer
        self.stop = stop
        self.metrics = metrics
        self.publisher = publisher or Publisher(settings, producer, store, metrics)
        self.me = uuid.uuid4().hex
        self._lease = store.redis.register_script(_RENEW)
        self._last_trim = 0.0
        #: when the last round finished (monotonic seconds), leader or not; and how many did
        self.last_ok_s = time.monotonic()
        self.rounds = 0
        self._timer_failures: dict[str, int] = {}
        #: outbox entries waiting out their own failure, by (shard, entry id)
        self._held: dict[tuple[int | None, bytes], _Held] = {}

    async def run(self) -> None:
        """Rounds until the stop event; a failed round is retried after a backoff."""
        backoff = Backoff(max_s=self.s.infra_backoff_max_s)
        while not self.stop.is_set():
            try:
                busy = await retry(
                    self.round,
                    what="relay round",
                    log=log,
                    stop=self.stop,
                    backoff=backoff,
                    retry_on=lambda exc: True,  # nothing but a stop ends the relay
                    on_retry=self._failed,
                )
            except Stopped:
                return
            self.last_ok_s = time.monotonic()
            self.rounds += 1
            self.metrics.faults.ok("relay")
            if not busy:
                await pause(self.stop, self.s.timer_poll_interval_s)

    def _failed(self, exc: BaseException) -> None:
        self.metrics.faults.failing("relay", exc)
        if is_transient(exc):
            self.metrics.infra_error(exc)
        else:
            self.metrics.relay_restarts += 1
            log.error("relay: unexpected error; the round restarts after a backoff", exc_info=exc)

    def stalled_s(self) -> float:
        """Seconds since a round last finished."""
        return time.monotonic() - self.last_ok_s

    async def round(self) -> bool:
        """Lead if the lease allows, then one tick; True when there may be more work now."""
        return await self.tick() if await self.lead() else False

    async def lead(self) -> bool:
        lease_ms = int(self.s.leader_lease_s * 1000)
        return bool(await self._lease(keys=[self.store.keys.leader], args=[self.me, lease_ms]))

    async def tick(self) -> bool:
        """One round; True when there may be more work right away."""
        fired = republished = 0
        for shard in self.store.keys.all_shards():  # [None] on one Redis
            fired = max(fired, await self.fire_timers(shard))
            republished = max(republished, await self.republish_outbox(shard))
        if time.monotonic() - self._last_trim > 60:
            await self.trim_indexes()
            self._last_trim = time.monotonic()
        return fired >= TIMERS_PER_ROUND or republished >= OUTBOX_PER_ROUND

    async def fire_timers(self, shard: int | None = None) -> int:
        """One shard's due timers -> TimerFired records; each timer that fails is postponed on
        its own."""
        now_ms = int(time.time() * 1000)
        members = await self.store.due_timers(now_ms, TIMERS_PER_ROUND, shard)
        if not members:
            return 0
        gone: list[str] = []  # sent, or unreadable by this version
        failed: dict[str, Exception] = {}
        ready: list[tuple[str, Record]] = []
        for m in members:
            try:
                parsed = parse_timer_member(m)
                if parsed is None:
                    log.error("dropping a timer this version cannot read: %r", m)
                    gone.append(m)
                    continue
                saga_id, due = parsed
                ready.append((m, timer_record(saga_id, m, due, self.s.output_format)))
            except Exception as exc:  # a member that parses but cannot become a record
                failed[m] = exc
        outcomes = await send_each(self.producer, self.s.events_topic, [r for _, r in ready])
        outage: Exception | None = None
        for (m, _), err in zip(ready, outcomes, strict=True):
            if err is None:
                gone.append(m)
                self._timer_failures.pop(m, None)
            elif is_transient(err):
                outage = outage or err  # Kafka's fault, not the timer's: the round backs off
            else:
                failed[m] = err
        await self.store.remove_timers(gone, shard)
        self.metrics.timers_fired += len(gone)
        if failed:
            await self.store.postpone_timers(
                {m: now_ms + int(self._entry_failed(m, e) * 1000) for m, e in failed.items()},
                shard,
            )
        if outage is not None:
            raise outage
        return len(members)

    def _entry_failed(self, member: str, exc: Exception) -> float:
        n = self._timer_failures.get(member, 0)
        self._timer_failures[member] = n + 1
        delay = ENTRY_BACKOFF.delay(n)
        self.metrics.relay_entry_errors += 1
        log.warning(
            "relay: timer %s failed (%s: %s); retrying it in %.1fs",
            *(member, type(exc).__name__, exc, delay),
        )
        return delay

    async def republish_outbox(self, shard: int | None = None) -> int:
        """One shard's outbox entries older than the sweep age -> commands again; an entry
        that fails waits for its own retry time while the others go on."""
        age_ms = int(self.s.outbox_sweep_age_s * 1000)
        now = time.monotonic()
        ready: list[tuple[bytes, OutboxEntry]] = []
        failed: list[tuple[bytes, Exception]] = []
        seen: set[bytes] = set()
        after: bytes | None = None
        complete = False  # read up to the cutoff: a held id not seen is gone
        for _ in range(OUTBOX_PAGES):
            rows = await self.store.outbox_older_than(age_ms, OUTBOX_PER_ROUND, after, shard)
            for rid, fields in rows:
                seen.add(rid)
                held = self._held.get((shard, rid))
                if held is not None and held.not_before_s > now:
                    continue
                try:
                    ready.append((rid, OutboxEntry.from_fields(fields)))
                except Exception as exc:  # not as step.lua writes entries
                    failed.append((rid, exc))
            if len(rows) < OUTBOX_PER_ROUND:
                complete = True
                break
            if len(ready) >= OUTBOX_PER_ROUND:
                break
            after = rows[-1][0]
        if complete:
            self._held = {
                (sh, rid): h for (sh, rid), h in self._held.items() if sh != shard or rid in seen
            }
        if not ready and not failed:
            return 0
        outcomes = await send_each(
            self.producer, self.s.commands_topic, [(e.key, e.value, e.headers) for _, e in ready]
        )
        crash_point("relay.after_publish")
        done: list[bytes] = []
        outage: Exception | None = None
        for (rid, entry), err in zip(ready, outcomes, strict=True):
            if err is None:
                done.append(rid)
            elif is_record_error(err):  # Kafka can never take it: dead-letter it, drop it
                await self.publisher.dead_letter_entry(entry, err, "relay")
                done.append(rid)
            elif is_transient(err):
                outage = outage or err
            else:
                failed.append((rid, err))
        for rid, err in failed:
            self._hold(shard, rid, err)
        await self.store.outbox_delete(done, shard)
        for rid in done:
            self._held.pop((shard, rid), None)
        if done:
            self.metrics.outbox_republished += len(done)
            log.info("re-published %d commands left in the outbox", len(done))
        if outage is not None:
            raise outage
        return len(ready)

    def _hold(self, shard: int | None, rid: bytes, exc: Exception) -> None:
        n = self._held[(shard, rid)].failures if (shard, rid) in self._held else 0
        delay = ENTRY_BACKOFF.delay(n)
        self._held[(shard, rid)] = _Held(n + 1, time.monotonic() + delay)
        self.metrics.relay_entry_errors += 1
        log.warning(
            "relay: outbox entry %s failed (%s: %s); retrying it in %.1fs",
            *(rid.decode(), type(exc).__name__, exc, delay),
        )

    async def trim_indexes(self) -> None:
        """Final sagas expire after the retention time; drop their index entries too."""
        if self.s.retention_s <= 0:
            return
        cutoff = int(time.time() * 1000) - self.s.retention_s * 1000
        keys = self.store.keys
        for shard in keys.all_shards():
            for status in FINAL:
                await self.store.redis.zremrangebyscore(
                    keys.index(status.value, shard), "-inf", cutoff
                )
