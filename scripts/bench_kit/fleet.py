"""The processes under test, and the CPU time of every process in the measurement.

One fleet is the orchestrator and the four sample workers (`saga orchestrator run`, `saga
participant run <name>`), each a child process of the bench, on fresh topics and a fresh key
prefix. The workers get a prefix of their own (`<prefix>p`), so everything under the
orchestrator's prefix is the orchestrator's and the memory figures count nothing else. Children
are stopped, killed and restarted by pid, never by name. The broker and Redis belong to the
shared stack: they are only looked up (by the port they listen on) to read their CPU time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

from infra import kafka
from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from participants.samples.order.workers import inventory
from schemas.config import Settings

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("inventory", "payment", "shipping", "notification")
SAGA_CLI = [sys.executable, "-m", "orchestrator.ops.cli"]
#: enough stock that no bench order is ever refused for want of it
STOCK_UNITS = 1_000_000_000
STOCK_SKUS = ("sku-1", "sku-2")


class BenchError(Exception):
    """The bench cannot go on (a deadline passed, a process died); the message says why."""


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_all(procs: list[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
    """SIGTERM each child, then SIGKILL what has not exited within the timeout."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout_s)


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The caller's environment (so any SAGA_* engine setting a person exports reaches the
    processes under test), pointed at the bench's topics and prefix."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        SAGA_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        SAGA_REDIS_URL=settings.redis_url,
        SAGA_COMMANDS_TOPIC=settings.commands_topic,
        SAGA_EVENTS_TOPIC=settings.events_topic,
        SAGA_DLQ_TOPIC=settings.dlq_topic,
        SAGA_TOPIC_PARTITIONS=str(settings.topic_partitions),
        SAGA_KEY_PREFIX=settings.key_prefix,
        SAGA_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    )
    env.update(extra)
    return env


def static_member(role: str) -> dict[str, str]:
    """Kafka static membership for a bench process, as a deployment with stable names runs it
    (docs/OPERATIONS.md): a SIGKILLed orchestrator restarted under its id gets its partitions
    back at once. BENCH_STATIC_MEMBERSHIP=0 measures the dynamic default instead (the restart
    then waits out the session timeout of its dead self). One id per role is unique: each
    worker process runs one participant, in its own consumer group."""
    if os.environ.get("BENCH_STATIC_MEMBERSHIP", "1") == "0":
        return {}
    return {"SAGA_GROUP_INSTANCE_ID": f"bench-{role}"}


@dataclass
class Fleet:
    settings: Settings
    logdir: Path
    #: SAGA_SAGA_MODULES for the orchestrator; None keeps the default (the order saga)
    saga_modules: str | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.settings.key_prefix

    @property
    def participant_prefix(self) -> str:
        return f"{self.prefix}p"

    @property
    def topics(self) -> list[str]:
        s = self.settings
        return [s.commands_topic, s.events_topic, s.dlq_topic]

    def orchestrator_env(self) -> dict[str, str]:
        extra = {"SAGA_SAGA_MODULES": self.saga_modules} if self.saga_modules else {}
        return child_env(self.settings, **extra, **static_member("orchestrator"))

    def orchestrator_settings(self) -> OrchestratorSettings:
        """The settings the orchestrator process reads from `orchestrator_env()` (the bench's
        own thread is the only one reading the environment meanwhile)."""
        with mock.patch.dict(os.environ, self.orchestrator_env(), clear=True):
            return OrchestratorSettings()

    async def start(self) -> None:
        kafka.create_topics(self.settings, self.topics, self.settings.topic_partitions)
        redis = redis_factory.client(self.settings)
        try:
            for sku in STOCK_SKUS:
                await inventory.set_stock(redis, self.participant_prefix, sku, STOCK_UNITS)
        finally:
            await redis.aclose()
        self.start_orchestrator()
        for name in WORKERS:
            self.procs[name] = spawn(
                [*SAGA_CLI, "participant", "run", name],
                self.worker_env(),
                self.logdir / f"{name}.log",
            )

    def worker_env(self) -> dict[str, str]:
        return child_env(
            self.settings, SAGA_KEY_PREFIX=self.participant_prefix, **static_member("worker")
        )

    def start_orchestrator(self) -> None:
        self.procs["orchestrator"] = spawn(
            [*SAGA_CLI, "orchestrator", "run"],
            self.orchestrator_env(),
            self.logdir / "orchestrator.log",
        )

    def kill_orchestrator(self) -> float:
        """SIGKILL the orchestrator and reap it; returns the time (epoch s) of the kill."""
        proc = self.procs["orchestrator"]
        if proc.poll() is not None:
            raise BenchError(f"the orchestrator had already exited ({proc.returncode})")
        at = time.time()
        proc.kill()
        proc.wait(timeout=60)
        return at

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise BenchError(
                    f"{name} exited with {p.returncode}; see {self.logdir / (name + '.log')}"
                )

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def stop(self) -> None:
        stop_all(list(self.procs.values()))


# ---- CPU time ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port, found through the socket's inode; None when
    it is not on this machine (or not visible to us)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return int(proc.name)
            except OSError:  # this descriptor was closed meanwhile (a busy broker's are)
                continue
    return None


def stack_pids(settings: Settings) -> dict[str, int | None]:
    """The broker's and Redis's pids, when they run on this machine."""
    first = settings.kafka_bootstrap_servers.split(",")[0]
    kafka_port = int(first.rsplit(":", 1)[1]) if ":" in first else 9092
    redis_port = urlparse(settings.redis_url).port or 6379
    return {"broker": listener_pid(kafka_port), "redis": listener_pid(redis_port)}


@dataclass
class CpuWindow:
    """CPU seconds each named process used between `begin` and `end`."""

    pids: dict[str, int | None]
    start: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def begin(cls, pids: dict[str, int | None]) -> CpuWindow:
        w = cls(dict(pids))
        w.start = {name: cpu_seconds(pid) if pid else None for name, pid in w.pids.items()}
        return w

    def end(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            now = cpu_seconds(pid) if pid else None
            before = self.start.get(name)
            out[name] = round(now - before, 2) if now is not None and before is not None else None
        return out


def per_unit_us(cpu_s: dict[str, float | None], units: float) -> dict[str, float | None]:
    """CPU microseconds per saga (or step) for each process, and their total."""
    out: dict[str, float | None] = {
        name: (round(v / units * 1e6, 1) if v is not None and units > 0 else None)
        for name, v in cpu_s.items()
    }
    known = [v for v in cpu_s.values() if v is not None]
    out["total"] = round(sum(known) / units * 1e6, 1) if units > 0 else None
    return out
