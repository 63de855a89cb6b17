"""A user's saga module as the only saga module: the daemon runs the user's saga and knows
nothing of the order sample (its StartOrder is poison), through real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, H_ERROR_MESSAGE, header
from tests.support.kafka import produce, read_all
from tests.support.orch import SagaReader
from tests.support.procs import ROOT, kill, orchestrator_env, start_orchestrator

USER_MODULE = '["tests.support.user_sagas"]'
# the worker may start before the orchestrator made its topic: made first, as in a deployment
pytestmark = pytest.mark.participant_topics("greeter")


async def test_only_the_user_saga_module_is_registered(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """The user's saga completes; a StartOrder is dead-lettered as an unknown saga type."""
    env = orchestrator_env(settings, SAGA_SAGA_MODULES=USER_MODULE)
    orch = start_orchestrator(settings, tmp_path / "orch.log", SAGA_SAGA_MODULES=USER_MODULE)
    worker = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.ops.cli", "participant", "run",
         "tests.support.user_sagas:greeter"],
        env=env, cwd=ROOT, stdout=(tmp_path / "worker.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        start = {"sagaId": "greet-1", "command": "StartSaga", "sagaType": "greeting",
                 "data": {"name": "Ada"}}  # fmt: skip
        order = {"sagaId": "order-1", "command": "StartOrder", "customerId": "c1",
                 "items": [{"productId": "sku-1", "quantity": 1}], "amount": "5.00"}  # fmt: skip
        await produce(
            settings,
            settings.commands_topic,
            [(b"greet-1", orjson.dumps(start)), (b"order-1", orjson.dumps(order))],
        )
        assert (await reader.wait_final(["greet-1"], timeout_s=90))["greet-1"] == "completed"
        fields = await reader.fields("greet-1")
        assert fields["type"] == "greeting"
        assert orjson.loads(fields["step.compose.result"]) == {"text": "hello, Ada"}
        [dead] = await read_all(settings, settings.dlq_topic, 1, timeout_s=60)
        assert dead.key == b"order-1"
        assert header(dead.headers, H_ERROR_CLASS) == "unknown_saga_type"
        assert "unknown saga type" in (header(dead.headers, H_ERROR_MESSAGE) or "")
        assert await reader.state("order-1") is None
    finally:
        for proc in (orch, worker):
            if proc.poll() is None:
                kill(proc)
