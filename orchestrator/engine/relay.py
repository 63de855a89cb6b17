"""Background duties of every orchestrator copy, for the partitions it owns: fire due timers,
re-publish outbox entries a crash left behind, compact completed sagas and trim the state
indexes of expired ones.

There is no leader and no lease. Each copy serves the events topic's partitions Kafka assigned
it, fenced by each partition's ownership generation (`ownership.py`): every read it fires from
first checks, in the same Lua call, that the partition's `_owner` still holds the token this
copy took, so a copy paused while its partitions moved fires nothing. Two copies firing the same
timer or command (one send already on its way when the partition moved) are harmless: timer
events and commands carry deterministic ids and are deduplicated downstream.

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
from dataclasses import dataclass

from infra.crashpoints import crash_point
from infra.errors import is_record_error, is_transient
from infra.rdkafka import Producer
from infra.retry import Backoff, Stopped, pause, retry
from orchestrator.config import OrchestratorSettings
from orchestrator.core.model import FINAL, parse_timer_member
from orchestrator.engine.compact import compact_shard
from orchestrator.engine.ownership import Ownership
from orchestrator.engine.publish import Publisher, Record, send_each
from orchestrator.engine.store import OutboxEntry, RedisStore
from orchestrator.engine.translate import timer_record
from orchestrator.telemetry.metrics import Metrics

log = logging.getLogger("orchestrator.engine.relay")

TIMERS_PER_ROUND = 1000
OUTBOX_PER_ROUND = 500
#: outbox pages read past entries that wait for their own retry, per round
OUTBOX_PAGES = 10
#: how one failing timer or outbox entry is retried, on its own
ENTRY_BACKOFF = Backoff(initial_s=0.5, max_s=60.0)
#: completed sagas compacted per shard and round
COMPACT_PER_ROUND = 200
#: seconds between two trims of the state indexes
TRIM_EVERY_S = 60.0
#: seconds between two compactions of a shard that had nothing more to compact
COMPACT_EVERY_S = 1.0
#: a round that took longer than this (the process was paused, or starved) is followed by
#: another at once: partitions that moved meanwhile meet the fence before the revoke arrives
STALLED_ROUND_S = 1.0


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
        producer: Producer,
        stop: asyncio.Event,
        metrics: Metrics,
        publisher: Publisher | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.s = settings
        self.store = store
        self.producer = producer
        self.stop = stop
        self.metrics = metrics
        self.publisher = publisher or Publisher(settings, producer, store, metrics)
        self.own = ownership or Ownership(store.redis, store.keys, metrics)
        self._last_trim = 0.0
        #: per shard: when it was last compacted (monotonic), and whether that call was full
        self._compacted: dict[int | None, tuple[float, bool]] = {}
        #: when the last round finished (monotonic seconds), partitions owned or not; and how
        #: many did
        self.last_ok_s = time.monotonic()
        self.rounds = 0
        self._timer_failures: dict[str, int] = {}
        #: outbox entries waiting out their own failure, by (partition, entry id); None is the
        #: global outbox of older versions
        self._held: dict[tuple[int | None, bytes], _Held] = {}

    async def run(self) -> None:
        """Rounds until the stop event; a failed round is retried after a backoff."""
        backoff = Backoff(max_s=self.s.infra_backoff_max_s)
        while not self.stop.is_set():
            started = time.monotonic()
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
            if not busy and time.monotonic() - started < STALLED_ROUND_S:
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
        """Take the partitions assigned since the last round, then serve every partition this
        copy owns; True when there may be more work now."""
        await self.own.take_pending()
        return await self.tick()

    async def tick(self) -> bool:
        """One round over the owned partitions, all at once: each begins with its fenced read,
        so an idle round costs the same few round trips to Redis however many partitions the
        copy owns, and a copy resumed after a pause meets the fence on every partition it lost
        in one go. True when there may be more work."""
        results = await asyncio.gather(
            *(self.serve(p) for p in self.own.owned()), return_exceptions=True
        )
        for r in results:  # every partition's work ended before the round fails
            if isinstance(r, BaseException):
                raise r
        busy = any(results)
        if time.monotonic() - self._last_trim > TRIM_EVERY_S:
            await self.trim_indexes()
            self._last_trim = time.monotonic()
        return busy

    async def serve(self, part: int) -> bool:
        """One partition: its timers, its outbox, its completed sagas; the owner of partition
        0 also drains the global timers and outbox of older versions (one Redis) and compacts
        the single Redis's sagas."""
        lags: list[float] = []
        parts: list[int | None] = [part]
        if part == 0 and not self.store.keys.shards:
            parts.append(None)
        busy = False
        for p in parts:
            fired = await self.fire_timers(p, lags)
            if fired is None:
                return False  # fenced: the partition is no longer ours
            republished = await self.republish_outbox(p, lags)
            if republished is None:
                return False
            busy = busy or fired >= TIMERS_PER_ROUND or republished >= OUTBOX_PER_ROUND
        if self.own.holds(part):
            self.metrics.relay_lag_s[part] = max(lags, default=0.0)
        shard = part if self.store.keys.shards else None  # one Redis: its sagas are one shard
        if self.s.compact_after_s > 0 and (shard is not None or part == 0):
            busy = await self.compact(shard) or busy
        return busy

    async def compact(self, shard: int | None) -> bool:
        """Completed sagas past `compact_after_s` -> their summary (`compact.py`); a shard
        with nothing more to do is looked at again after COMPACT_EVERY_S, not every round."""
        last, full = self._compacted.get(shard, (0.0, True))
        if not full and time.monotonic() - last < COMPACT_EVERY_S:
            return False
        older_than = int((time.time() - self.s.compact_after_s) * 1000)
        keys = self.store.keys
        n = await compact_shard(self.store.redis, keys, shard, older_than, COMPACT_PER_ROUND)
        self._compacted[shard] = (time.monotonic(), n >= COMPACT_PER_ROUND)
        return n >= COMPACT_PER_ROUND

    async def fire_timers(self, part: int | None, lags: list[float] | None = None) -> int | None:
        """One partition's due timers -> TimerFired records; each timer that fails is postponed
        on its own. None when fenced (another copy took the partition). `part` None: the global
        timer set of older versions, fenced by partition 0."""
        now_ms = int(time.time() * 1000)
        key = self.store.timers_key(part)
        due = await self.own.due_timers(0 if part is None else part, key, now_ms, TIMERS_PER_ROUND)
        if due is None:
            return None
        if not due:
            return 0
        if lags is not None:  # the oldest due timer: how far behind this partition's timers are
            lags.append(max(0.0, (now_ms - due[0][1]) / 1000))
        members = [m for m, _ in due]
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
                saga_id, when = parsed
                ready.append((m, timer_record(saga_id, m, when, self.s.output_format)))
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
        await self.store.remove_timers(gone, part)
        self.metrics.timers_fired += len(gone)
        if failed:
            await self.store.postpone_timers(
                {m: now_ms + int(self._entry_failed(m, e) * 1000) for m, e in failed.items()},
                part,
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

    async def republish_outbox(
        self, part: int | None, lags: list[float] | None = None
    ) -> int | None:
        """One partition's outbox entries older than the sweep age -> commands again; an entry
        that fails waits for its own retry time while the others go on. None when fenced.
        `part` None: the global outbox of older versions, fenced by partition 0."""
        age_ms = int(self.s.outbox_sweep_age_s * 1000)
        now = time.monotonic()
        now_ms = int(time.time() * 1000)
        cutoff = f"{now_ms - age_ms}-0"
        key = self.store.outbox_key(part)
        ready: list[tuple[bytes, OutboxEntry]] = []
        failed: list[tuple[bytes, Exception]] = []
        seen: set[bytes] = set()
        start: bytes | str = "-"
        complete = False  # read up to the cutoff: a held id not seen is gone
        for page in range(OUTBOX_PAGES):
            fence = 0 if part is None else part
            rows = await self.own.outbox_rows(fence, key, start, cutoff, OUTBOX_PER_ROUND)
            if rows is None:
                return None
            if page == 0 and rows and lags is not None:  # the oldest entry past its sweep age
                lags.append(max(0.0, (now_ms - age_ms - _entry_ms(rows[0][0])) / 1000))
            for rid, fields in rows:
                seen.add(rid)
                held = self._held.get((part, rid))
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
            start = b"(" + rows[-1][0]
        if complete:
            self._held = {
                (sh, rid): h for (sh, rid), h in self._held.items() if sh != part or rid in seen
            }
        if not ready and not failed:
            return 0
        outcomes = await send_each(
            self.producer,
            self.publisher.command_topic,
            [(e.key, e.value, e.headers) for _, e in ready],
        )
        # partitions are served at once: the marker says whose sends the kill fell after
        crash_point(
            "relay.after_publish", partition=part, sent=len(ready), acked=outcomes.count(None)
        )
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
            self._hold(part, rid, err)
        await self.store.outbox_delete(done, part)
        for rid in done:
            self._held.pop((part, rid), None)
        if done:
            self.metrics.outbox_republished += len(done)
            log.info("re-published %d commands left in the outbox", len(done))
        if outage is not None:
            raise outage
        return len(ready)

    def _hold(self, part: int | None, rid: bytes, exc: Exception) -> None:
        n = self._held[(part, rid)].failures if (part, rid) in self._held else 0
        delay = ENTRY_BACKOFF.delay(n)
        self._held[(part, rid)] = _Held(n + 1, time.monotonic() + delay)
        self.metrics.relay_entry_errors += 1
        log.warning(
            "relay: outbox entry %s failed (%s: %s); retrying it in %.1fs",
            *(rid.decode(), type(exc).__name__, exc, delay),
        )

    async def trim_indexes(self) -> None:
        """Final sagas expire after the retention time; drop their index entries too, in the
        shards this copy owns (one Redis: the owner of partition 0 trims the global indexes)."""
        if self.s.retention_s <= 0:
            return
        cutoff = int(time.time() * 1000) - self.s.retention_s * 1000
        keys = self.store.keys
        owned = self.own.owned()
        shards: list[int | None] = list(owned) if keys.shards else [None] if 0 in owned else []
        for shard in shards:
            for status in FINAL:
                await self.store.redis.zremrangebyscore(
                    keys.index(status.value, shard), "-inf", cutoff
                )


def _entry_ms(rid: bytes) -> int:
    """The time (ms) in a stream entry id (`<ms>-<seq>`)."""
    return int(rid.split(b"-", 1)[0])
