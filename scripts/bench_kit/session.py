"""One fleet on fresh topics and a fresh key prefix, and the parts measured with it, in order:

    park (--in-flight) -> warm-up -> idle -> peak (+ memory) -> open -> kill

Parked sagas come first, so their memory is measured alone and every later figure is measured
beside them. The kill comes last: it replaces the orchestrator process, whose CPU time the
earlier parts read. Whatever happens, the processes are stopped, the keys under both prefixes
removed and the topics deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infra import kafka
from schemas.config import Settings
from scripts.bench_kit import direct, memory, modes, parked
from scripts.bench_kit.fleet import BenchError, Fleet, stack_pids
from scripts.bench_kit.load import Loader

#: what the drains and the resume may take before the bench gives up (not a measurement)
DRAIN_S = 300.0
RESUME_S = 300.0


class Session:
    def __init__(self, a: argparse.Namespace, s: Settings, tag: str, logdir: Path) -> None:
        self.a = a
        fs = s.model_copy(
            update={
                "commands_topic": f"bench-{tag}-commands",
                "events_topic": f"bench-{tag}-events",
                "dlq_topic": f"bench-{tag}-dlq",
                "key_prefix": f"bench{tag}",
                "topic_partitions": a.partitions,
            }
        )
        self.fleet = Fleet(fs, logdir, parked.MODULES if a.in_flight else None)
        self.loader = Loader(fs)
        self.out: dict[str, Any] = {}
        self.durations: dict[str, float] = {}
        self.pids: dict[str, int | None] = {}
        self.stack_pids = stack_pids(s)
        self.drain_s = DRAIN_S + a.window / 10

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.durations[part] = round(time.monotonic() - t0, 1)

    def say(self, line: str) -> None:
        print(line, flush=True)

    async def run(self) -> dict[str, Any]:
        a, redis = self.a, self.loader.redis
        try:
            shared0 = await memory.shared_bytes(redis, self.fleet.prefix)
            with self.timed("start"):
                await self.fleet.start()
                self.pids = {**self.fleet.pids(), **self.stack_pids, "loadgen": os.getpid()}
            if a.in_flight:
                with self.timed("inflight"):
                    await self.park(shared0)
            with self.timed("warm"):
                await modes.warm_up(self.loader, a.warm, timeout_s=DRAIN_S)
            self.fleet.check_alive()
            if "idle" in a.parts:
                with self.timed("idle"):
                    self.out["idle"] = await modes.idle(self.loader, a.idle_n, timeout_s=60)
                self.say(f"idle: {self.out['idle']['idle_saga_ms']:.1f} ms")
            if "peak" in a.parts:
                with self.timed("peak"):
                    await self.peak()
            rate = a.rate or a.load_fraction * self.out.get("peak", {}).get("sagas_per_s", 0.0)
            if rate <= 0 and ("open" in a.parts or "kill" in a.parts):
                raise BenchError("the peak measured no completions: no rate for open and kill")
            if "open" in a.parts:
                with self.timed("open"):
                    self.out["open_loop"] = o = await modes.open_loop(
                        self.loader, rate, a.open_s, a.arrivals == "poisson", self.pids,
                        self.drain_s,
                    )  # fmt: skip
                self.say(f"open loop at {rate:.0f}/s: p50 {o['latency_p50_ms']:.0f} ms, "
                         f"p99 {o['latency_p99_ms']:.0f} ms")  # fmt: skip
            if "kill" in a.parts:
                with self.timed("kill"):
                    self.out["kill"] = k = await modes.kill_resume(
                        self.loader, self.fleet, rate, a.kill_before_s, a.kill_after_s,
                        RESUME_S, self.drain_s,
                    )  # fmt: skip
                self.say(f"kill: first completion {k['resume_after_kill_s']:.2f} s after it")
            self.fleet.check_alive()
        finally:
            with self.timed("cleanup"):
                await self.cleanup()
        self.out["durations_s"] = self.durations
        return self.out

    async def park(self, shared0: int) -> None:
        a, redis = self.a, self.loader.redis
        used0 = await memory.used_memory(redis)
        if a.park == "kafka":
            timeout_s = 600 + a.in_flight / 20
            p = await modes.Parking(self.loader, a.in_flight, timeout_s).run()
        else:
            p = await direct.park(self.fleet.orchestrator_settings(), self.loader, a.in_flight)
        mem = await memory.per_saga(redis, self.fleet.prefix, p.pop("ids"), shared0,
                                    a.memory_sample)  # fmt: skip
        # Redis as a whole, shared with whatever else uses it: the exact figure is bytes_per_saga
        used = await memory.used_memory(redis)
        self.out["inflight"] = p | mem | {"redis_used_before": used0, "redis_used_after": used}
        self.say(f"in flight: {a.in_flight} parked ({p['park']}) in {p['park_s']} s, "
                 f"{mem['bytes_per_saga']} bytes each")  # fmt: skip

    async def peak(self) -> None:
        a, redis, f = self.a, self.loader.redis, self.fleet
        before = await memory.shared_bytes(redis, f.prefix)
        pbefore = await memory.shared_bytes(redis, f.participant_prefix)
        peak = await modes.closed_loop(
            self.loader, a.window, a.ramp_s, a.peak_s, a.sagas, self.pids, self.drain_s
        )
        ids = peak.pop("ids")
        self.out["peak"] = peak
        self.say(f"peak: {peak['sagas_per_s']:.0f} sagas/s")
        self.out["memory"] = await memory.per_saga(redis, f.prefix, ids, before, a.memory_sample)
        # the workers' own records (dedupe, stored replies, the sample's ledgers), for scale
        self.out["participant_memory"] = await memory.per_saga(
            redis, f.participant_prefix, ids, pbefore, a.memory_sample
        )

    async def cleanup(self) -> None:
        self.fleet.stop()
        redis = self.loader.redis
        try:
            for prefix in (self.fleet.prefix, self.fleet.participant_prefix):
                batch: list[Any] = []
                async for key in redis.scan_iter(match=f"{prefix}:*", count=memory.SCAN_COUNT):
                    batch.append(key)
                    if len(batch) >= memory.SCAN_COUNT:
                        await redis.unlink(*batch)
                        batch = []
                if batch:
                    await redis.unlink(*batch)
        finally:
            await self.loader.aclose()
            fs = self.fleet.settings
            # with them the participant command topics (`<commands>.<participant>`) the
            # orchestrator created at start-up in per-participant mode
            try:
                listed = list(kafka.admin(fs).list_topics(timeout=30).topics)
            except Exception:  # Kafka away: delete what is known
                listed = []
            own = [t for t in listed if t.startswith(f"{fs.commands_topic}.")]
            kafka.delete_topics(fs, self.fleet.topics + own)
