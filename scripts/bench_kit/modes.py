"""What the bench measures with a running fleet, one function per mode.

- `idle`: one saga at a time on an otherwise idle stack; the median is "one saga, idle".
- `closed_loop`: the peak. A fixed number of sagas in flight; each finished saga is replaced at
  once. Throughput is completions over the measured window, after a ramp.
- `open_loop`: arrivals at a set rate (Poisson by default, or evenly spaced), independent of
  completions, so a slow saga cannot hold back the next arrival. Latency runs from the time a
  start was due to the saga's own `updated_at` when it finished.
- `kill_resume`: open-loop load, a SIGKILL of the orchestrator, an immediate restart; the time
  from the kill to the first completion counted after it.
- `Parking`: sagas of the `parked` type, whose first participant never answers, left in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.engine import history as saga_history
from orchestrator.engine.statecodec import from_iso
from scripts.bench_kit.fleet import BenchError, CpuWindow, Fleet, per_unit_us
from scripts.bench_kit.load import FINAL, POLL_S, STEPS_PER_SAGA, Loader, pct
from scripts.bench_kit.memory import Room
from scripts.bench_kit.parked import PARKED_TYPE

PROGRESS_S = 10.0
#: a closed loop without a single completion for this long is broken, not slow
STALL_S = 120.0
#: parked starts produced at a time (and at most this many ahead of the orchestrator)
PARK_BATCH = 50_000


async def warm_up(loader: Loader, n: int, timeout_s: float) -> None:
    """A few sagas through every process, so that group joins are not measured."""
    before = await loader.finished()
    loader.start("warm", n)
    await loader.flush()
    await loader.wait_finished(before + n, timeout_s, "warm-up (are the processes up?)")


async def idle(loader: Loader, n: int, timeout_s: float) -> dict[str, Any]:
    """Also where each saga's time went, from its history: due -> start applied, then each
    transition to the next (a command's trip to its worker and the reply's trip back)."""
    each: list[float] = []
    parts: list[list[float]] = []
    for _ in range(n):
        due_ms = time.time() * 1000
        (sid,) = loader.start("idle")
        await loader.flush()
        deadline = time.monotonic() + timeout_s
        while True:
            state = await loader.redis.hget(loader.keys.saga(sid), "state")
            if state in FINAL:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"idle saga {sid} not finished within {timeout_s:g} s ({state!r})")
            await asyncio.sleep(POLL_S / 5)
        lat, _ = await loader.latencies_ms({sid: due_ms})
        each.append(lat[0])
        hist = await saga_history.read(loader.redis, loader.keys.history(sid))
        at = [due_ms] + [from_iso(h["at"]) for h in hist if h["outcome"] == "applied"]
        parts.append([b - a for a, b in itertools.pairwise(at)])
    # the median of each segment over the sagas: [start, step 1, ..., step n]
    split = [pct([p[i] for p in parts if len(p) > i], 50) for i in range(max(map(len, parts)))]
    return {
        "idle_saga_ms": pct(each, 50),
        "each_ms": [round(x, 1) for x in each],
        "start_ms": split[0] if split else None,
        "step_ms": [round(x, 1) for x in split[1:] if x is not None],
    }


@dataclass
class Window:
    """Completions counted between two reads of the state counts."""

    t0: float = 0.0
    c0: int = 0
    t1: float = 0.0
    c1: int = 0

    @property
    def rate(self) -> float | None:
        return (self.c1 - self.c0) / (self.t1 - self.t0) if self.t1 > self.t0 else None


async def closed_loop(
    loader: Loader,
    window: int,
    ramp_s: float,
    measure_s: float,
    max_sagas: int | None,
    pids: dict[str, int | None],
    drain_timeout_s: float,
) -> dict[str, Any]:
    base = await loader.finished()
    started: list[str] = []
    w = Window()
    cpu: CpuWindow | None = None
    t_start = last_change = time.monotonic()
    last_finished = base
    while True:
        counts = await loader.counts()
        finished = sum(counts.get(s, 0) for s in FINAL)
        in_flight = len(started) - (finished - base)
        now = time.monotonic()
        if finished != last_finished:
            last_finished, last_change = finished, now
        elif now - last_change > STALL_S:
            raise BenchError(f"closed loop: no saga finished for {STALL_S:g} s ({counts})")
        if cpu is None and now - t_start >= ramp_s:
            w.t0, w.c0 = now, counts.get("completed", 0)
            cpu = CpuWindow.begin(pids)
        elif cpu is not None:
            w.t1, w.c1 = now, counts.get("completed", 0)
            enough = max_sagas is not None and w.c1 - w.c0 >= max_sagas
            if enough or (max_sagas is None and now - w.t0 >= measure_s):
                break
        if in_flight < window:
            started += loader.start("peak", window - in_flight)
        else:
            loader.poll()
        await asyncio.sleep(POLL_S)
    assert cpu is not None
    cpu_s = cpu.end()
    await loader.flush()
    await loader.wait_finished(base + len(started), drain_timeout_s, "closed loop, draining")
    rate = w.rate or 0.0
    sample = started[:: max(1, len(started) // 2000)]
    times = await loader.final_times(sample)
    in_system = [u - c for _s, c, u in times.values()]
    measured = w.c1 - w.c0
    return {
        "sagas_per_s": rate,
        "steps_per_s": rate * STEPS_PER_SAGA,
        "window": window,
        "measured_s": round(w.t1 - w.t0, 2),
        "measured_sagas": measured,
        "sagas_started": len(started),
        # start consumed -> finished, at this many in flight: queueing, mostly
        "saga_in_system_p50_ms": pct(in_system, 50),
        "saga_in_system_p99_ms": pct(in_system, 99),
        "cpu_s_per_process": cpu_s,
        "cpu_us_per_saga": per_unit_us(cpu_s, measured),
        "ids": started,
    }


@dataclass
class Arrivals:
    """Starts produced at their due times until `stop` is set; `due_ms` by saga id."""

    rate: float
    kind: str
    poisson: bool
    seed: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    due_ms: dict[str, float] = field(default_factory=dict)
    max_lag_ms: float = 0.0

    async def run(self, loader: Loader) -> None:
        rng = random.Random(self.seed)
        gap = 1.0 / self.rate
        due = time.time()
        while not self.stop.is_set():
            now = time.time()
            while due <= now:
                (sid,) = loader.start(self.kind)
                self.due_ms[sid] = due * 1000
                self.max_lag_ms = max(self.max_lag_ms, (time.time() - due) * 1000)
                due += rng.expovariate(self.rate) if self.poisson else gap
            loader.poll()
            await asyncio.sleep(min(max(0.0, due - time.time()), POLL_S))


async def open_loop(
    loader: Loader,
    rate: float,
    duration_s: float,
    poisson: bool,
    pids: dict[str, int | None],
    drain_timeout_s: float,
) -> dict[str, Any]:
    base = await loader.finished()
    before = await loader.completed()
    arrivals = Arrivals(rate, "open", poisson, seed=12)
    cpu = CpuWindow.begin(pids)
    t0 = time.monotonic()
    task = asyncio.create_task(arrivals.run(loader))
    await asyncio.sleep(duration_s)
    arrivals.stop.set()
    await task
    elapsed = time.monotonic() - t0
    await loader.flush()
    n = len(arrivals.due_ms)
    await loader.wait_finished(base + n, drain_timeout_s, "open loop, draining")
    cpu_s = cpu.end()  # from the first arrival until the last of these sagas finished
    lat, unfinished = await loader.latencies_ms(arrivals.due_ms)
    completed = await loader.completed() - before
    return {
        "rate_per_s": rate,
        "arrivals": "poisson" if poisson else "fixed",
        "offered_per_s": n / elapsed,
        "sagas": n,
        "latency_p50_ms": pct(lat, 50),
        "latency_p99_ms": pct(lat, 99),
        "latency_max_ms": max(lat) if lat else None,
        "unfinished": unfinished,
        "generator_max_lag_ms": round(arrivals.max_lag_ms, 1),
        "cpu_s_per_process": cpu_s,
        "cpu_us_per_saga": per_unit_us(cpu_s, completed),
    }


async def kill_resume(
    loader: Loader,
    fleet: Fleet,
    rate: float,
    before_s: float,
    after_s: float,
    resume_timeout_s: float,
    drain_timeout_s: float,
) -> dict[str, Any]:
    base = await loader.finished()
    arrivals = Arrivals(rate, "kill", poisson=True, seed=13)
    task = asyncio.create_task(arrivals.run(loader))
    try:
        await asyncio.sleep(before_s)
        fleet.check_alive()
        killed_at = fleet.kill_orchestrator()
        # read after the reap: whatever is counted from here on was finished by the new process
        c0 = await loader.completed()
        fleet.start_orchestrator()
        while (c := await loader.completed()) <= c0:
            if time.time() - killed_at > resume_timeout_s:
                raise BenchError(
                    f"no saga completed within {resume_timeout_s:g} s of the SIGKILL; see "
                    f"{fleet.logdir / 'orchestrator.log'}"
                )
            await asyncio.sleep(POLL_S)
        resumed_s = time.time() - killed_at
        await asyncio.sleep(after_s)
    finally:
        arrivals.stop.set()
        await task
    await loader.flush()
    n = len(arrivals.due_ms)
    await loader.wait_finished(base + n, drain_timeout_s, "after the SIGKILL, draining")
    lat, unfinished = await loader.latencies_ms(arrivals.due_ms)
    return {
        "resume_after_kill_s": round(resumed_s, 3),
        "rate_per_s": rate,
        "sagas": n,
        "first_completions_after_restart": c - c0,
        "unfinished": unfinished,
        "latency_p99_ms": pct(lat, 99),
        "latency_max_ms": max(lat) if lat else None,
    }


@dataclass
class Parking:
    """Starts of parked sagas, produced a batch at a time and at most one batch ahead of the
    orchestrator, with Redis's memory checked as they land."""

    loader: Loader
    n: int
    timeout_s: float
    batch: int = PARK_BATCH
    t0: float = field(default_factory=time.monotonic)
    last_print: float = 0.0
    before: int = 0
    room: Room | None = None

    async def run(self) -> dict[str, Any]:
        at_start = await self.loader.counts()
        self.before = sum(at_start.values())
        self.room = await Room.of(self.loader.redis)
        ids = self.loader.new_ids("park", self.n)
        for i in range(0, self.n, self.batch):
            for sid in ids[i : i + self.batch]:
                self.loader.start_saga(sid, PARKED_TYPE)
            await self.loader.flush()
            produced = min(self.n, i + self.batch)
            await self.landed(produced - self.batch if produced < self.n else produced)
        counts = await self.loader.counts()
        if any(counts.get(s, 0) != at_start.get(s, 0) for s in FINAL):
            raise BenchError(f"parked sagas finished instead of waiting: {counts}")
        park_s = time.monotonic() - self.t0
        return {"in_flight": self.n, "park": "kafka", "park_s": round(park_s, 1),
                "park_per_s": round(self.n / park_s), "ids": ids}  # fmt: skip

    async def landed(self, target: int) -> None:
        """Until `target` parked sagas exist; a BenchError when Redis would run out first."""
        while (present := sum((await self.loader.counts()).values()) - self.before) < target:
            now = time.monotonic()
            if now - self.t0 > self.timeout_s:
                raise BenchError(f"only {present} of {self.n} sagas parked in {self.timeout_s:g} s")
            if now - self.last_print > PROGRESS_S:
                print(f"  parking: {present}/{self.n} in flight", flush=True)
                self.last_print = now
            await asyncio.sleep(0.2)
        assert self.room is not None
        await self.room.check(self.loader.redis, present, self.n)
