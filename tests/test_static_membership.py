"""Kafka static membership (SAGA_GROUP_INSTANCE_ID): an orchestrator SIGKILLed and restarted
under the same instance id gets its partitions back at once.

The session timeout is set to two minutes and the sagas started after the restart must finish
well within one: a restart that had to wait out its dead self's session (dynamic membership,
or an instance id that did not reach the consumer) cannot pass. A deadline on a condition, not
a timed assertion: how fast it resumes is measured by `scripts/bench` (resume_after_kill_s)."""

from __future__ import annotations

import signal
from pathlib import Path

from schemas.config import Settings
from tests.support.kafka import produce
from tests.support.orch import SagaReader
from tests.support.procs import kill, start_orchestrator
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_e2e import start_order

SESSION_MS = 120_000
STATIC = {
    "SAGA_GROUP_INSTANCE_ID": "orchestrator-a",
    "SAGA_CONSUMER_SESSION_TIMEOUT_MS": str(SESSION_MS),
}


async def test_a_restart_under_the_same_instance_id_resumes_without_the_session_wait(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    log = tmp_path / "orch.log"
    before = [f"static-a-{i}" for i in range(5)]
    after = [f"static-b-{i}" for i in range(5)]
    async with ScriptedParticipant(settings):
        proc = start_orchestrator(settings, log, **STATIC)
        try:
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in before]
            )
            states = await reader.wait_final(before, timeout_s=90)
            assert set(states.values()) == {"completed"}, log.read_text()[-3000:]
            assert kill(proc, signal.SIGKILL) == -signal.SIGKILL
            proc = start_orchestrator(settings, log, **STATIC)
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in after]
            )
            # half the session timeout: only a copy that took its partitions back at once
            # (static membership) finishes these in time
            states = await reader.wait_final(after, timeout_s=SESSION_MS / 2000)
            assert set(states.values()) == {"completed"}, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                kill(proc, signal.SIGTERM)
