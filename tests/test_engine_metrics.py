"""/metrics of a running orchestrator passes `promtool check metrics` (Prometheus' own linter,
from Debian's `prometheus` package, which scripts/test installs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import httpx
import pytest

from schemas.config import Settings
from tests.support.kafka import produce
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant
from tests.test_engine_redis_faults import free_port
from tests.test_orchestrator_e2e import start_order


async def test_metrics_pass_promtool(settings: Settings, reader: SagaReader) -> None:
    """A real scrape, after sagas ran (counters, the latency histogram, per-partition lag, the
    infrastructure errors by kind, the stuck count and readiness all have samples), is accepted
    by promtool as it is."""
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool is not installed (scripts/test installs Debian's prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"under CI: {reason}", pytrace=False)  # a done-when check must run
        pytest.skip(reason)
    port = free_port()
    ids = [f"prom-{i}" for i in range(3)]
    async with (
        ScriptedParticipant(settings),
        running(settings, http_port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        await produce(
            settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids]
        )
        await reader.wait_final(ids)
        scrape = await http.get("/metrics")
    assert scrape.status_code == 200
    text = scrape.text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked
    assert 'saga_infra_errors_total{source="redis",kind="OOM"} 0' in text
    assert "saga_step_latency_seconds_count 12" in text
    # the gauges the SagaStuck and SagaOrchestratorNotReady alerts read, present as promtool saw
    assert re.search(r"^saga_sagas_stuck 0$", text, re.MULTILINE), text
    assert re.search(r"^saga_ready 1$", text, re.MULTILINE), text
    # the relay serves every partition (one copy), each with its lag; partitions count once
    # though the copy owns each in both input topics
    for p in range(settings.topic_partitions):
        assert re.search(rf'^saga_relay_lag_seconds{{partition="{p}"}} \d', text, re.M), text
    assert re.search(r"^saga_relay_partitions 3$", text, re.MULTILINE), text
    assert re.search(r"^saga_assigned_partitions 3$", text, re.MULTILINE), text
    assert re.search(r"^saga_relay_fenced_total 0$", text, re.MULTILINE), text
