"""Real orchestrator processes for crash tests: started, killed and restarted by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from schemas.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def orchestrator_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SAGA_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        SAGA_REDIS_URL=settings.redis_url,
        SAGA_REDIS_CLUSTER=str(settings.redis_cluster).lower(),
        SAGA_TOPIC_PARTITIONS=str(settings.topic_partitions),
        SAGA_COMMANDS_TOPIC=settings.commands_topic,
        SAGA_EVENTS_TOPIC=settings.events_topic,
        SAGA_DLQ_TOPIC=settings.dlq_topic,
        SAGA_COMMAND_TOPICS=settings.command_topics,  # a test may run both modes
        SAGA_KEY_PREFIX=settings.key_prefix,
        SAGA_SAGA_MODULES='["tests.support.sagas_fast"]',
        SAGA_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def start_orchestrator(settings: Settings, log_path: Path, **extra: str) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.ops.cli", "orchestrator", "run"],
        env=orchestrator_env(settings, **extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def kill(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL, timeout_s: float = 60
) -> int:
    os.kill(proc.pid, sig)
    return proc.wait(timeout=timeout_s)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not exited within the timeout."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
