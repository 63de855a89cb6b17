"""The processes of one chaos run, all on 127.0.0.1 and all started here.

Kafka and Redis come from `scripts/stack up` under a private SAGA_STACK_DIR with free ports, so
killing them disturbs no other stack. The orchestrator copies and the workers are children of this
process, each in its own session (a Ctrl-C reaches only the chaos script, which then stops them
in order). Everything is killed by pid: a child by its Popen, Kafka and Redis by the pid files
`scripts/stack` writes, checked against the process's working directory like `stack` does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"

#: settings of the stack tooling itself that a person may have set (kept for `scripts/stack`)
STACK_TOOLING = (
    "SAGA_JARS_DIR", "SAGA_JAVA", "SAGA_MVN", "SAGA_KAFKA_HEAP", "SAGA_KAFKA_VERSION",
    "SAGA_LOG4J_VERSION", "SAGA_STACK_TIMEOUT_S", "SAGA_STOP_TIMEOUT_S", "SAGA_VENV",
    "SAGA_PYTHON",
)  # fmt: skip
#: where the saga settings live; none of them may leak into the run from the caller's shell
FOREIGN = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")


class ChaosSetupError(Exception):
    """The run could not be set up (the stack did not come up, a process would not start)."""


def free_ports(n: int) -> list[int]:
    """`n` different ports free on 127.0.0.1 (bound together, then released for the stack)."""
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def clean_env(extra: Mapping[str, str], keep: tuple[str, ...] = ()) -> dict[str, str]:
    """The caller's environment without any saga setting (but `keep`), plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in FOREIGN and (not k.startswith("SAGA_") or k in keep)
    }
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (the state field of /proc/PID/stat, which follows
    the command name in parentheses)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def owned_pid(pidfile: Path, home: Path) -> int | None:
    """The pid in `pidfile` when that process lives and works inside `home` (a recycled pid
    never matches)."""
    try:
        pid = int(pidfile.read_text().strip())
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except (OSError, ValueError):
        return None
    if not pid_alive(pid) or not (cwd == home or home in cwd.parents):
        return None
    return pid


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # polling /proc for a process that is not our child
    return True


@dataclass
class Stack:
    """A private Kafka + Redis pair run by `scripts/stack` in `home`."""

    home: Path
    kafka_port: int
    controller_port: int
    redis_port: int

    @classmethod
    def on_free_ports(cls, home: Path) -> Stack:
        return cls(home.resolve(), *free_ports(3))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def log(self) -> Path:
        return self.home / "logs" / "chaos-stack.log"

    def env(self) -> dict[str, str]:
        return clean_env(
            {
                "SAGA_STACK_DIR": str(self.home),
                "SAGA_KAFKA_PORT": str(self.kafka_port),
                "SAGA_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "SAGA_REDIS_PORT": str(self.redis_port),
                "SAGA_TOPIC_PARTITIONS": "6",
            },
            keep=STACK_TOOLING,
        )

    async def up(self) -> float:
        """`scripts/stack up` (starts whatever is down); the seconds it took."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                str(STACK), "up", env=self.env(), cwd=ROOT, stdout=out, stderr=out
            )
            code = await proc.wait()
        if code != 0:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise ChaosSetupError("scripts/stack up failed:\n  " + "\n  ".join(tail))
        return time.monotonic() - started

    def down(self) -> None:
        """`scripts/stack down`: stops Kafka and Redis by the pids in their pid files."""
        with self.log.open("ab") as out:
            subprocess.run(
                [str(STACK), "down"], env=self.env(), cwd=ROOT, stdout=out, stderr=out, timeout=200
            )

    def pid(self, name: str) -> int | None:
        return owned_pid(self.home / f"{name}.pid", self.home)

    def kill(self, name: str) -> int | None:
        """SIGKILL Kafka or Redis by the pid `scripts/stack` recorded; None when not running."""
        pid = self.pid(name)
        if pid is None:
            return None
        os.kill(pid, signal.SIGKILL)
        if not wait_gone(pid, 30):
            raise ChaosSetupError(f"{name} (pid {pid}) still runs 30 s after SIGKILL")
        return pid


@dataclass
class App:
    """One orchestrator copy or worker: a child process, restarted under the same name."""

    name: str
    argv: list[str]
    env: dict[str, str]
    home: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: exit codes of the exits nobody asked for, noticed by `check_exited`
    crashes: list[int] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.home / "apps" / f"{self.name}.pid"

    def start(self) -> int:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"=== chaos: start #{self.starts} of {self.name} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.home,  # inside the run's directory: how a leftover is recognised
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{self.proc.pid}\n")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        """SIGKILL; the pid killed, or None when it was not running."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None  # down on purpose: not a crash
        return pid

    def check_exited(self) -> int | None:
        """The exit code when the process ended by itself since the last look (recorded as a
        crash); None while it runs."""
        if self.proc is None or (code := self.proc.poll()) is None:
            return None
        self.crashes.append(code)
        self.proc = None
        return code

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM (the clean drain), then SIGKILL after `timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def saga_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.ops.cli", *args]


def app_env(stack: Stack) -> dict[str, str]:
    """What every orchestrator copy and worker runs with: this run's stack and nothing else."""
    return clean_env(
        {
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
            "SAGA_REDIS_URL": stack.redis_url,
            "SAGA_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )


def build_apps(stack: Stack, payment: str) -> dict[str, App]:
    """Two orchestrator copies in one group and the four sample workers (`payment` names the
    payment participant: `payment`, or a `module:attribute` for the negative control)."""
    env = app_env(stack)
    apps = [App(f"orchestrator-{i}", saga_cli("orchestrator", "run"), env, stack.home)
            for i in (1, 2)]  # fmt: skip
    for name, target in (
        ("inventory", "inventory"),
        ("payment", payment),
        ("shipping", "shipping"),
        ("notification", "notification"),
    ):
        apps.append(App(name, saga_cli("participant", "run", target), env, stack.home))
    return {a.name: a for a in apps}


def reap_leftovers(home: Path) -> list[int]:
    """SIGKILL processes a previous run in `home` left behind (its driver was SIGKILLed), then
    `scripts/stack down` there. Pids are checked against their working directory."""
    killed = []
    for pidfile in sorted((home / "apps").glob("*.pid")):
        pid = owned_pid(pidfile, home)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 30)
            killed.append(pid)
    if any(owned_pid(home / f"{n}.pid", home) for n in ("kafka", "redis")):
        subprocess.run(
            [str(STACK), "down"],
            env=clean_env({"SAGA_STACK_DIR": str(home)}, keep=STACK_TOOLING),
            cwd=ROOT,
            capture_output=True,
            timeout=200,
        )
    return killed
