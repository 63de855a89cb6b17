"""scripts/stack in good and hostile environments.

Every test that starts processes uses its own SAGA_STACK_DIR and free ports, so the shared default
stack (9092/6379), which other tests use at the same time, is never stopped. The jar cache
(SAGA_JARS_DIR, default .stack/jars) is shared, so a second instance downloads nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from tests.conftest import ROOT, Infra

STACK = str(ROOT / "scripts" / "stack")
EXTERNAL = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"))


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def stack_env(stack_dir: Path, **extra: str) -> dict[str, str]:
    kafka, controller, redis_port = free_ports(3)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL") and not k.startswith("SAGA_")
    }
    env.update(
        SAGA_STACK_DIR=str(stack_dir),
        SAGA_KAFKA_PORT=str(kafka),
        SAGA_KAFKA_CONTROLLER_PORT=str(controller),
        SAGA_REDIS_PORT=str(redis_port),
    )
    env.update(extra)
    return env


def stack(cmd: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STACK, cmd], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def gone(pid: int) -> Callable[[], bool]:
    return lambda: not pid_alive(pid)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def pids_in(stack_dir: Path) -> dict[str, int]:
    return {
        p.stem: int(p.read_text().strip()) for p in stack_dir.glob("*.pid") if p.read_text().strip()
    }


@contextmanager
def started_stack(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Whatever happens, `scripts/stack down` with the same env afterwards."""
    try:
        yield env
    finally:
        stack("down", env, timeout=120)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.mark.skipif(EXTERNAL, reason="Kafka and Redis come from the environment")
def test_status_exit_0_when_up(infra: Infra) -> None:
    proc = subprocess.run([STACK, "status"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kafka: up on 127.0.0.1:" in proc.stdout
    assert "redis: up on 127.0.0.1:" in proc.stdout
    assert "appendonly yes" in proc.stdout


def test_status_exit_1_when_down(tmp_path: Path) -> None:
    proc = stack("status", stack_env(tmp_path / "st"), timeout=60)
    assert proc.returncode == 1
    assert "kafka: down" in proc.stdout and "redis: down" in proc.stdout


def test_java_missing_is_one_line(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "st", SAGA_JAVA="/nonexistent/java")
    proc = stack("up", env)
    assert proc.returncode != 0
    line = one_error_line(proc)
    assert "Java not found" in line and "SAGA_JAVA" in line
    assert pids_in(tmp_path / "st") == {}, "nothing may be started when a check fails"


def test_maven_missing_is_one_line(tmp_path: Path) -> None:
    env = stack_env(
        tmp_path / "st", SAGA_MVN="/nonexistent/mvn", SAGA_JARS_DIR=str(tmp_path / "jars")
    )
    proc = stack("up", env)
    assert proc.returncode != 0
    line = one_error_line(proc)
    assert "Maven not found" in line
    assert pids_in(tmp_path / "st") == {}


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    proc = stack("up", stack_env(tmp_path / "st", SAGA_TOPIC_PARTITIONS="six"))
    assert proc.returncode != 0
    assert "SAGA_TOPIC_PARTITIONS" in one_error_line(proc)


def test_kafka_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(8)  # accepts TCP connections, never speaks Kafka
        port = squatter.getsockname()[1]
        env = stack_env(tmp_path / "st", SAGA_KAFKA_PORT=str(port))
        proc = stack("up", env)
        assert proc.returncode != 0
        line = one_error_line(proc)
        assert f"port {port}" in line and "SAGA_KAFKA_PORT" in line and "not" in line
        assert pids_in(tmp_path / "st") == {}
        # down leaves a process it did not start alone
        down = stack("down", env)
        assert down.returncode == 0
        assert "did not start; leaving it alone" in down.stdout
        assert port_open(port)


def test_redis_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(8)
        port = squatter.getsockname()[1]
        proc = stack("up", stack_env(tmp_path / "st", SAGA_REDIS_PORT=str(port)))
        assert proc.returncode != 0
        line = one_error_line(proc)
        assert f"port {port}" in line and "SAGA_REDIS_PORT" in line and "not Redis" in line


def test_kafka_not_up_in_time(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "st", SAGA_STACK_TIMEOUT_S="1")
    with started_stack(env):
        proc = stack("up", env)
        pids = pids_in(tmp_path / "st")
        assert proc.returncode != 0
        first = proc.stderr.strip().splitlines()[0]
        assert first.startswith("error: ") and "did not answer within 1 s" in first, proc.stderr
        assert "SAGA_STACK_TIMEOUT_S" in first
        assert "last lines of" in proc.stderr, "the log tail comes with the message"
        assert "Traceback" not in proc.stderr
    # started_stack ran `scripts/stack down`: what was started is gone, by pid
    assert set(pids) <= {"kafka", "redis"} and pids
    for name, pid in pids.items():
        wait_for(gone(pid), 10, f"{name} (pid {pid}) to be gone")
    assert pids_in(tmp_path / "st") == {}


@pytest.mark.slow
def test_down_then_up_keeps_topics_and_data(tmp_path: Path) -> None:
    """A separate stack instance: up, write, down, up again: topics, messages and keys remain."""
    st = tmp_path / "st"
    env = stack_env(st, SAGA_TOPIC_PARTITIONS="3")
    bootstrap = f"127.0.0.1:{env['SAGA_KAFKA_PORT']}"
    redis_url = f"redis://127.0.0.1:{env['SAGA_REDIS_PORT']}/0"
    with started_stack(env):
        first = stack("up", env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "downloading" not in first.stdout, "the jar cache is shared between instances"
        assert "created, 3 partitions" in first.stdout

        key, value = f"keep-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex.encode()
        client = redis.Redis.from_url(redis_url)
        client.set(key, value)
        client.close()
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce("saga-events", value=value, key=key.encode())
        assert producer.flush(30) == 0

        # a second stack dir on the same ports reuses what answers there, and down leaves it
        other = {**env, "SAGA_STACK_DIR": str(tmp_path / "other")}
        reuse = stack("up", other)
        assert reuse.returncode == 0, reuse.stdout + reuse.stderr
        assert reuse.stdout.count("not started by scripts/stack); using it") == 2
        assert stack("down", other).stdout.count("leaving it alone") == 2
        assert port_open(int(env["SAGA_KAFKA_PORT"]))

        pids = pids_in(st)
        down = stack("down", env)
        assert down.returncode == 0, down.stdout + down.stderr
        for pid in pids.values():
            wait_for(gone(pid), 10, f"pid {pid} to be gone")
        assert not port_open(int(env["SAGA_KAFKA_PORT"]))
        assert not port_open(int(env["SAGA_REDIS_PORT"]))

        again = stack("up", env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "topics: saga-commands saga-events saga-dlq exist" in again.stdout

        client = redis.Redis.from_url(redis_url)
        assert client.get(key) == value
        client.close()
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
        for name in ("saga-commands", "saga-events", "saga-dlq"):
            assert len(meta.topics[name].partitions) == 3
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"keep-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["saga-events"])
        try:
            got = None
            deadline = time.monotonic() + 60
            while got is None and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is not None and msg.error() is None:
                    got = msg
            assert got is not None and got.value() == value
        finally:
            consumer.close()
