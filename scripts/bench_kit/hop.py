"""One Kafka hop on an idle stack, by producer linger and consumer fetch wait.

    .venv/bin/python -m scripts.bench_kit.hop [--sends 60] [--rounds 3]

An aiokafka producer and consumer built by `infra.kafka` (as the engine's are) on a fresh topic;
each send waits a little first (so the consumer's fetch is idle at the broker, as it is between
an idle saga's steps), then the time until `getmany` returns the record. The combinations run
in turn, `--rounds` times, so a busy moment on a shared machine spreads over all of them.
Prints the p50 and p90 of each; docs/PERFORMANCE.md ("One saga on an idle stack") uses them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

from infra import kafka
from schemas.config import Settings
from scripts.bench_kit.cli_args import whole

#: (linger ms, fetch max wait ms): the engine's old and new producer waits, two fetch waits
COMBINATIONS = ((2, 50), (0, 50), (0, 500), (2, 500))


async def hops(s: Settings, topic: str, sends: int) -> list[float]:
    producer = kafka.producer(s)
    consumer = kafka.consumer(s, topic, group_id=f"hop-{uuid.uuid4().hex[:8]}",
                              auto_offset_reset="latest")  # fmt: skip
    out: list[float] = []
    async with kafka.started(producer), kafka.started(consumer):
        deadline = time.monotonic() + 60
        while not consumer.assignment():  # joined: a position on every partition
            if time.monotonic() > deadline:
                raise TimeoutError("no partitions assigned within 60 s")
            await consumer.getmany(timeout_ms=100)
        for i in range(sends + 1):
            # idle gaps of 50-110 ms, not in step with the fetch wait
            await asyncio.sleep(0.05 + (i % 7) / 100)
            t0 = time.perf_counter()
            await producer.send(topic, b"v", str(i).encode())
            while not any((await consumer.getmany(timeout_ms=1000)).values()):
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError(f"send {i} not received within 30 s")
            if i:  # the first one warms the connection up
                out.append((time.perf_counter() - t0) * 1000)
    return out


async def main(sends: int, rounds: int) -> None:
    base = Settings()
    topic = f"hop-{uuid.uuid4().hex[:8]}"
    kafka.create_topics(base, [topic], base.topic_partitions)
    got: dict[tuple[int, int], list[float]] = {c: [] for c in COMBINATIONS}
    try:
        for _ in range(rounds):
            for linger, wait in COMBINATIONS:
                s = base.model_copy(
                    update={"kafka_linger_ms": linger, "kafka_fetch_max_wait_ms": wait}
                )
                got[(linger, wait)] += await hops(s, topic, sends)
    finally:
        kafka.delete_topics(base, [topic])
    for (linger, wait), values in got.items():
        v = sorted(values)
        print(f"linger {linger} ms, fetch wait {wait:>3} ms: p50 {v[len(v) // 2]:.2f} ms, "
              f"p90 {v[int(len(v) * 0.9)]:.2f} ms over {len(v)} sends")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m scripts.bench_kit.hop", description=__doc__)
    ap.add_argument("--sends", type=whole(1, 10_000), default=60, help="per round and pair")
    ap.add_argument("--rounds", type=whole(1, 100), default=3)
    a = ap.parse_args()
    asyncio.run(main(a.sends, a.rounds))
    sys.exit(0)
