"""CPU of one participant worker per command, measured alone (issue 12: the guard per batch).

    .venv/bin/python scripts/worker_cpu.py [--commands 4000] [--max-batch 500] [--cluster]
        [--participant payment|inventory] [--guard batched|per-command]

Pre-produces `--commands` new commands (each of its own saga) to a private commands topic,
then runs one worker of the order sample in this process and counts the CPU this process spent
(`resource.getrusage`, every thread: librdkafka's broker threads and the Kafka clients' own
threads included) from the worker's start until every command has its reply. Producing
happens before the clock starts, so what is counted is the worker: consuming, routing, the
guard's lookup, the handler, the commit script, the reply. The join of the consumer group is
counted too (a few ms, the same in both modes). `--guard` is SAGA_PARTICIPANT_GUARD, for the
side-by-side (docs/PARTICIPANTS.md). The machine is shared: compare runs made back to back.

    .venv/bin/python scripts/worker_cpu.py --lookup-only [--max-batch 500] [--cluster]

measures the guard's lookup alone, both modes in one process, alternating (40 rounds of one
batch of `--max-batch` commands each): the CPU per command of `Store.lookup`.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra import kafka
from infra import redis as redis_factory
from participants.config import WorkerOptions
from participants.keys import SdkKeys
from participants.samples.order.workers import inventory, payment
from participants.store import GUARD_MODES, Store
from participants.testing import command, order, produce, running
from schemas.config import Settings


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cluster_url() -> str:
    env = Path(__file__).resolve().parent.parent / ".stack" / "cluster.env"
    for line in env.read_text().splitlines():
        if line.startswith("SAGA_REDIS_URL="):
            return line.split("=", 1)[1].strip()
    raise SystemExit(
        "no .stack/cluster.env: start the cluster with scripts/stack up --redis-cluster"
    )


async def lookup_only(settings: Settings, args: argparse.Namespace, rounds: int = 40) -> None:
    redis = redis_factory.client(settings, decode=True)
    keys = SdkKeys(settings.key_prefix, "payment")
    stores = {mode: Store(redis, keys, 60, mode) for mode in GUARD_MODES}
    cmds = [
        command(f"s{i}", "payment", "ProcessPayment", "process_payment")
        for i in range(args.max_batch)
    ]
    cpu = dict.fromkeys(stores, 0.0)
    try:
        for store in stores.values():
            await store.lookup(cmds)  # the script loaded, the connections made
        for _ in range(rounds):
            for mode, store in stores.items():
                c0 = time.process_time()
                await store.lookup(cmds)
                cpu[mode] += time.process_time() - c0
    finally:
        await redis.aclose()
    for mode, seconds in cpu.items():
        print(
            f"lookup guard={mode} redis={'cluster' if args.cluster else 'single'} "
            f"batch={args.max_batch} cpu_us_per_command={seconds / rounds / len(cmds) * 1e6:.1f}"
        )


async def main(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:10]
    base = Settings()
    settings = base.model_copy(
        update={
            "redis_url": _cluster_url() if args.cluster else base.redis_url,
            "redis_cluster": args.cluster,
            "commands_topic": f"cpu-{tag}-commands",
            "events_topic": f"cpu-{tag}-events",
            "dlq_topic": f"cpu-{tag}-dlq",
            "key_prefix": f"cpu{tag}",
            "command_topics": "single",
        }
    )
    if args.lookup_only:
        await lookup_only(settings, args)
        return
    topics = [settings.commands_topic, settings.events_topic, settings.dlq_topic]
    kafka.create_topics(settings, topics, 3)
    try:
        if args.participant == "payment":
            svc = payment.build()
            cmds = [
                command(f"s{i}", "payment", "ProcessPayment", "process_payment", data=order())
                for i in range(args.commands)
            ]
        else:
            svc = inventory.build()
            cmds = [
                command(f"s{i}", "inventory", "ReserveItems", "reserve_inventory", data=order())
                for i in range(args.commands)
            ]
        await produce(settings, cmds)
        options = WorkerOptions(max_batch=args.max_batch, poll_timeout_ms=50, guard=args.guard)
        t0, c0 = time.monotonic(), _cpu_s()
        async with running(settings, svc, options) as w:
            deadline = time.monotonic() + 600
            while w.stats.replies < args.commands:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {w.stats.replies} replies after 600 s")
                await asyncio.sleep(0.05)
            c1, t1 = _cpu_s(), time.monotonic()
            stats = w.stats
        per_cmd_us = (c1 - c0) / args.commands * 1e6
        print(
            f"guard={args.guard} redis={'cluster' if args.cluster else 'single'} "
            f"participant={args.participant} commands={args.commands} "
            f"batches={stats.batches} cpu_s={c1 - c0:.2f} wall_s={t1 - t0:.2f} "
            f"cpu_us_per_command={per_cmd_us:.0f} outcomes={dict(stats.outcomes)}"
        )
    finally:
        kafka.delete_topics(settings, topics)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--commands", type=int, default=4000)
    p.add_argument("--max-batch", type=int, default=500)
    p.add_argument("--cluster", action="store_true")
    p.add_argument("--participant", choices=["payment", "inventory"], default="payment")
    p.add_argument("--guard", choices=GUARD_MODES, default="batched")
    p.add_argument("--lookup-only", action="store_true")
    asyncio.run(main(p.parse_args()))
