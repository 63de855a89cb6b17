"""A seeded, bounded kill loop, then an invariant check. Run it as `scripts/chaos` (it sets up the
virtualenv first); the parts are in `scripts/chaos_kit/`.

Everything runs on 127.0.0.1 and is its own: Kafka and Redis from `scripts/stack up` under a
private SAGA_STACK_DIR with free ports, two orchestrator copies in one group, the four sample
workers. Orders go to the commands topic at a steady pace, with injected failures (declines,
flaky shipping, failed notifications), out-of-stock orders and a few invalid records. Once the
first saga completes, a seeded plan SIGKILLs the processes, Kafka and Redis by pid and restarts
each after a short pause, until `--duration` ends. Then every saga must reach a final state, and
the checker (`chaos_kit.check`) reads the sagas, the workers' records and the dead letters.

Exit codes: 0 every invariant held; 1 a violation; 2 bad usage, or the run could not be set up;
130 interrupted. Everything started is stopped at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from participants.keys import domain_key
from participants.samples.order.workers import read_ledgers
from schemas.config import Settings
from scripts.chaos_kit.check import (
    FINAL,
    Records,
    Verdict,
    Violation,
    check,
    read_dead_letters,
    read_sagas,
)
from scripts.chaos_kit.fleet import (
    ROOT,
    STACK_TOOLING,
    App,
    ChaosSetupError,
    Stack,
    build_apps,
    clean_env,
    reap_leftovers,
)
from scripts.chaos_kit.plan import INFRA, TARGETS, Kill, kill_plan, parse_range
from scripts.chaos_kit.traffic import Order, Sender, make_orders, prepare, stock_for

UNSAFE_PAYMENT = "scripts.chaos_kit.unsafe_payment:build"
MARKER = ".chaos-run"
#: the first saga must complete within this long of the start (the pipeline works at all)
WARM_UP_S = 120.0


T = TypeVar("T")


def say(line: str) -> None:
    print(line, flush=True)


async def patiently(read: Callable[[], Awaitable[T]], timeout_s: float = 60) -> T:
    """`read()`, again while Redis is down or a pooled connection died with a killed server."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await read()
        except RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def seconds_range(text: str) -> tuple[float, float]:
        try:
            return parse_range(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p = argparse.ArgumentParser(
        prog="scripts/chaos", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--seed", type=int, default=7, help="seeds orders, stock and the kill plan")
    p.add_argument("--duration", type=float, default=150, help="seconds of kills (default 150)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=4.0, help="orders per second (default 4)")
    load.add_argument("--orders", type=int, help="orders in all, spread over --duration")
    for flag, default, what in (
        ("--kill-every", (3.0, 8.0), "seconds between kills"),
        ("--down-for", (0.5, 3.0), "seconds a killed process stays down"),
    ):
        low, high = default
        p.add_argument(flag, type=seconds_range, default=default, metavar="MIN-MAX",
                       help=f"{what} (default {low:g}-{high:g})")  # fmt: skip
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=180,
        help="seconds for every saga to end after the kills (default 180)",
    )
    p.add_argument(
        "--no-dedupe",
        action="store_true",
        help="negative control: an unsafe payment worker; the check must fail",
    )
    p.add_argument("--dir", type=Path, help="run directory (default .stack/chaos-<seed>)")
    p.add_argument("--keep", action="store_true", help="keep the run directory after success")
    opts = p.parse_args(argv)
    if opts.duration <= 0 or opts.rate <= 0 or (opts.orders is not None and opts.orders < 1):
        p.error("--duration, --rate and --orders must be positive")
    return opts


class Chaos:
    def __init__(self, opts: argparse.Namespace, stack: Stack, apps: dict[str, App]) -> None:
        self.opts, self.stack, self.apps = opts, stack, apps
        # the environment holds no saga setting (main); no .env either: this run's stack only
        no_env_file: dict[str, Any] = {"_env_file": None}
        self.settings = Settings(
            kafka_bootstrap_servers=stack.bootstrap, redis_url=stack.redis_url, **no_env_file
        )
        self.keys = Keys.of(self.settings)
        self.redis: Redis = redis_factory.client(self.settings, decode=True)
        self.kills: Counter[str] = Counter()
        self.up = {t: asyncio.Event() for t in TARGETS}
        for event in self.up.values():
            event.set()
        self.infra_lock = asyncio.Lock()  # one `scripts/stack up` or infrastructure kill at a time
        self.restarts: set[asyncio.Task[None]] = set()
        self.fatal: ChaosSetupError | None = None  # a restart that failed ends the run
        self.t0 = time.monotonic()

    def at(self) -> str:
        return f"{time.monotonic() - self.t0:6.1f}s"

    async def run(self) -> int:
        o = self.opts
        rng = random.Random(o.seed)
        orders = make_orders(rng, o.seed, o.orders or round(o.rate * o.duration))
        stock = stock_for(orders)
        plan = kill_plan(
            rng, o.duration, o.kill_every, o.down_for, first="payment" if o.no_dedupe else None
        )
        control = ", NO DEDUPE (negative control)" if o.no_dedupe else ""
        say(
            f"chaos: seed {o.seed}, {len(orders)} orders over {o.duration:g} s, "
            f"{len(plan)} kills planned{control}"
        )
        say(f"chaos: run directory {self.stack.home}")
        took = await self.stack.up()
        say(
            f"{self.at()}  stack up in {took:.1f} s: Kafka {self.stack.bootstrap}, "
            f"Redis {self.stack.redis_url}"
        )
        await patiently(lambda: prepare(self.settings, stock))
        for app in self.apps.values():
            app.start()
        sender = Sender(self.settings)
        sending = asyncio.create_task(sender.run(orders, o.duration))
        watching = asyncio.create_task(self.watch())
        try:
            await self.first_completion()
            window = time.monotonic()
            say(f"{self.at()}  first saga completed: kills begin")
            for kill in plan:
                await self.follow(kill, window)
            await asyncio.gather(*self.restarts)
            if self.fatal is not None:
                raise self.fatal
            say(f"{self.at()}  kills over; every process is back")
            await sending
            if left := await sender.finish(120):
                raise ChaosSetupError(f"{left} records were never acknowledged by Kafka")
            drained = await self.drain(list(sender.acked))
            return await self.verify(orders, stock, sender, drained)
        finally:
            watching.cancel()
            sending.cancel()
            await self.redis.aclose()

    # --- kills ----------------------------------------------------------------------------------

    async def follow(self, kill: Kill, window: float) -> None:
        await asyncio.sleep(max(0.0, window + kill.at_s - time.monotonic()))
        await self.up[kill.target].wait()  # still on its way back from an earlier kill
        if self.fatal is not None:
            raise self.fatal
        if self.opts.no_dedupe and kill.target == "payment":
            await self.after_a_charge()
        pid = await self.kill(kill.target)
        self.kills[kill.target] += 1
        self.up[kill.target].clear()
        say(f"{self.at()}  kill -9 {kill.target} (pid {pid}); restart in {kill.down_s:g} s")
        task = asyncio.create_task(self.restart(kill.target, kill.down_s))
        self.restarts.add(task)

    async def kill(self, target: str) -> int | None:
        if target not in INFRA:
            return self.apps[target].kill()
        async with self.infra_lock:
            return await asyncio.to_thread(self.stack.kill, target)

    async def restart(self, target: str, pause_s: float) -> None:
        await asyncio.sleep(pause_s)
        try:
            if target in INFRA:
                async with self.infra_lock:
                    took = await self.stack.up()
                say(f"{self.at()}  {target} back (scripts/stack up took {took:.1f} s)")
            else:
                self.apps[target].start()
        except ChaosSetupError as exc:
            self.fatal = exc
        finally:
            self.up[target].set()

    async def after_a_charge(self, timeout_s: float = 20) -> None:
        """Negative control: return right after the payment ledger grew, so that the kill lands
        while the unsafe worker waits between its charge and its stored outcome."""
        ledger = domain_key(self.settings.key_prefix, "payment", "ledger")
        deadline = time.monotonic() + timeout_s
        seen: int | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RedisError):
                n = await self.redis.llen(ledger)
                if seen is not None and n > seen:
                    return
                seen = n
            await asyncio.sleep(0.01)

    async def watch(self) -> None:
        """Restart a process that exited by itself (it is reported), and show progress."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            for app in self.apps.values():
                if (code := app.check_exited()) is not None:
                    say(
                        f"{self.at()}  {app.name} exited by itself (code {code}), restarting; "
                        f"see {app.log}"
                    )
                    app.start()
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                with contextlib.suppress(RedisError):
                    done = [await self.redis.zcard(self.keys.index(s)) for s in FINAL]
                    say(f"{self.at()}  sagas final: {sum(done)}")

    # --- the end --------------------------------------------------------------------------------

    async def first_completion(self) -> None:
        deadline = time.monotonic() + WARM_UP_S
        while time.monotonic() < deadline:
            with contextlib.suppress(RedisError):
                if await self.redis.zcard(self.keys.index("completed")):
                    return
            await asyncio.sleep(0.2)
        raise ChaosSetupError(
            f"no saga completed within {WARM_UP_S:g} s of the start; see {self.stack.home}/logs"
        )

    async def drain(self, saga_ids: list[str]) -> float:
        """Wait (up to --drain-timeout) until every saga is final; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < self.opts.drain_timeout:
            sagas = await patiently(lambda: read_sagas(self.redis, self.keys, saga_ids))
            if all(s.state in FINAL for s in sagas.values()):
                break
            await asyncio.sleep(0.5)
        took = time.monotonic() - started
        say(f"{self.at()}  drained in {took:.1f} s")
        return took

    async def verify(
        self, orders: list[Order], stock: dict[str, int], sender: Sender, drained_s: float
    ) -> int:
        by_id = {o.saga_id: o for o in orders if o.saga_id in sender.acked}
        dead_letters = []
        for _ in range(30):  # the last invalid records may still be on their way to the DLQ
            dead_letters = await asyncio.to_thread(read_dead_letters, self.settings)
            if sender.invalid <= {d.key for d in dead_letters}:
                break
            await asyncio.sleep(1)
        sagas = await patiently(lambda: read_sagas(self.redis, self.keys, list(by_id)))
        ledgers = await patiently(lambda: read_ledgers(self.redis, self.settings.key_prefix))
        verdict = check(Records(by_id, stock, sagas, ledgers, dead_letters, sender.invalid))
        verdict.add(
            Violation("process exited by itself", f"{a.name}: exit codes {a.crashes}, see {a.log}")
            for a in self.apps.values()
            if a.crashes
        )
        self.summary(verdict, len(by_id), len(sender.invalid), len(dead_letters), drained_s)
        return 1 if verdict.violations else 0

    def summary(
        self, verdict: Verdict, orders: int, invalid: int, dead: int, drained_s: float
    ) -> None:
        o, states = self.opts, verdict.states
        kills = ", ".join(f"{t} {self.kills[t]}" for t in TARGETS if self.kills[t])
        say(
            f"chaos: seed {o.seed}, {o.duration:g} s of kills, {time.monotonic() - self.t0:.0f} s "
            f"in all, drained in {drained_s:.1f} s"
        )
        shown = (*FINAL, *sorted(set(states) - set(FINAL)))
        sagas = ", ".join(f"{states[s]} {s}" for s in shown)
        say(f"orders: {orders} (+{invalid} invalid records); sagas: {sagas}")
        say(f"kills: {sum(self.kills.values())} ({kills or 'none'})")
        say(f"dead letters: {dead} (deliberately invalid records sent: {invalid})")
        kinds = ", ".join(f"{k} {n}" for k, n in verdict.by_kind().most_common())
        say(f"violations: {len(verdict.violations)}" + (f" ({kinds})" if kinds else ""))
        for v in verdict.violations[:25]:
            say(f"  {v.kind}: {v.detail}")
        if len(verdict.violations) > 25:
            say(f"  ... and {len(verdict.violations) - 25} more")
        say("chaos: FAILED" if verdict.violations else "chaos: OK, every invariant held")


def claim(home: Path) -> TextIO:
    """Lock the run directory (one run at a time; the lock lives as long as the returned file),
    end what a killed earlier run left there, and start it empty. Refuses a non-empty directory
    this script did not make."""
    home.parent.mkdir(parents=True, exist_ok=True)
    lock = open(home.parent / f".{home.name}.lock", "w")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ChaosSetupError(f"another scripts/chaos run uses {home}; pass --dir") from None
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise ChaosSetupError(f"{home} is not empty and was not made by scripts/chaos")
        reap_leftovers(home)
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).touch()
    return lock


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # this process talks to this run's stack only, whatever the caller's shell points at
    kept = clean_env({}, keep=STACK_TOOLING)
    os.environ.clear()
    os.environ.update(kept)
    home = (opts.dir or ROOT / ".stack" / f"chaos-{opts.seed}").resolve()
    try:
        lock = claim(home)
    except ChaosSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stack = Stack.on_free_ports(home)
    apps = build_apps(stack, UNSAFE_PAYMENT if opts.no_dedupe else "payment")
    code = 2

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await Chaos(opts, stack, apps).run()

    try:
        code = asyncio.run(guarded())
    except ChaosSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("chaos: interrupted")
        code = 130
    except Exception:  # a bug or an unexpected failure: not a verdict on the system under test
        traceback.print_exc()
    finally:
        # a second Ctrl-C must not leave processes behind: stopping takes a few seconds
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        for app in apps.values():
            app.stop()
        stack.down()
        if code == 0 and not opts.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"chaos: logs and data kept in {home} (logs/)")
        Path(lock.name).unlink(missing_ok=True)  # still held: a rival run fails, as it should
        lock.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
