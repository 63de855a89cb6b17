"""/metrics' `saga_sagas_stuck` and `saga_ready` on the real Kafka and Redis, and the setting
`SAGA_STUCK_AFTER_S` that bounds the first: a saga a silent participant holds is counted
(the same sagas `saga stuck` lists), finished ones are not, one that moves again leaves the
count; `saga_ready` is what /readyz answers; without Redis the stuck count is absent, never 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest
from pydantic import ValidationError

from orchestrator.config import OrchestratorSettings
from orchestrator.core.definition import Registry, SagaDefinition
from orchestrator.telemetry.metrics import STUCK_COUNT_CAP, Gauges, Metrics
from schemas import codec
from schemas.config import Settings
from schemas.messages import SagaCommand
from tests.conftest import ROOT
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.proxy import CuttableProxy
from tests.support.sagas_fast import ORDER_FAST, fast
from tests.support.scripted import Answer, ScriptedParticipant, reply_for
from tests.test_http import api_alone, free_port, metric
from tests.test_orchestrator_e2e import start_order
from tests.test_orchestrator_outage import target, via

#: the order saga with step timeouts far beyond any test: a held saga stays put, no timer moves it
ORDER_HELD = SagaDefinition(
    "order_fulfillment",
    1,
    tuple(
        fast(s.name, s.participant, s.action, s.compensation, timeout_s=3600.0)
        for s in ORDER_FAST.steps
    ),
)


def sample(text: str, name: str) -> float | None:
    """The value of an unlabelled sample, None when /metrics has no such line."""
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


async def test_a_held_saga_is_counted_stuck_and_a_finished_one_is_not(
    settings: Settings, reader: SagaReader
) -> None:
    """Two sagas wait on a participant that never answers, five complete. With
    SAGA_STUCK_AFTER_S=1 the gauge reaches exactly 2, the sagas `stuck` lists (the API's
    `?stuck=1`, which `saga stuck` shares). Answering one by hand lets it complete, and the
    gauge drops to 1."""
    held = {"held-0", "held-1"}
    healthy = [f"fine-{i}" for i in range(5)]

    def behaviour(cmd: SagaCommand) -> Answer:
        return "silent" if cmd.saga_id in held else "ok"

    port = free_port()
    async with (
        ScriptedParticipant(settings, behaviour) as participant,
        running(settings, Registry([ORDER_HELD]), http_port=port, stuck_after_s=1.0),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        first = (await http.get("/metrics")).text
        records = [(s.encode(), start_order(s)) for s in [*sorted(held), *healthy]]
        await produce(settings, settings.commands_topic, records)
        finished = await reader.wait_final(healthy)

        async def stuck_is(n: int) -> bool:
            return sample((await http.get("/metrics")).text, "saga_sagas_stuck") == n

        async def listed() -> set[str]:
            r = await http.get("/api/sagas", params={"stuck": "1", "olderThan": "1s"})
            return {s["saga_id"] for s in r.json()["sagas"]}

        await wait_for(lambda: stuck_is(2), 60, "saga_sagas_stuck 2", interval_s=0.2)
        stuck_before = await listed()
        # answer held-0's first command as the participant would have: it moves, then completes
        held.discard("held-0")
        command = participant.by_saga["held-0"][0]
        reply = reply_for(command, "ok")
        assert reply is not None
        await produce(settings, settings.events_topic, [(b"held-0", codec.encode(reply))])
        released = await reader.wait_final(["held-0"])
        await wait_for(lambda: stuck_is(1), 60, "saga_sagas_stuck 1", interval_s=0.2)
        stuck_after = await listed()
        still_held = await reader.state("held-1")
    assert metric(first, "saga_sagas_stuck") == 0  # present, a real zero, before any saga
    assert set(finished.values()) == {"completed"}
    assert stuck_before == {"held-0", "held-1"}
    assert released == {"held-0": "completed"}
    assert stuck_after == {"held-1"} and still_held == "started"


async def test_saga_ready_is_what_readyz_answers_and_stuck_is_absent_without_redis(
    settings: Settings,
) -> None:
    """Through a proxy whose cable is pulled: ready, /readyz 200 and saga_ready 1; cut, /readyz
    503 and saga_ready 0, saga_redis_up 0, and no saga_sagas_stuck line at all (a 0 would say
    nothing is stuck); plugged back, all three return."""
    proxy = CuttableProxy(*target(settings))
    await proxy.start()
    port = free_port()
    seen: dict[str, object] = {}

    async def agree(ready: bool) -> bool:
        probe = await http.get("/readyz")
        text = (await http.get("/metrics")).text
        seen.update(readyz=probe.status_code, saga_ready=sample(text, "saga_ready"))
        return (probe.status_code == 200) == ready and sample(text, "saga_ready") == int(ready)

    try:
        async with (
            running(via(settings, proxy), http_port=port, infra_backoff_max_s=0.5),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        ):
            await wait_for(lambda: agree(True), 60, f"ready on both: {seen}", interval_s=0.2)
            up = (await http.get("/metrics")).text
            proxy.cut()
            await wait_for(lambda: agree(False), 60, f"not ready on both: {seen}", interval_s=0.2)
            down = (await http.get("/metrics")).text
            proxy.restore()
            await wait_for(lambda: agree(True), 90, f"ready again: {seen}", interval_s=0.2)
            back = (await http.get("/metrics")).text
    finally:
        await proxy.stop()
    assert metric(up, "saga_ready") == 1 and metric(up, "saga_sagas_stuck") == 0
    assert metric(down, "saga_ready") == 0 and metric(down, "saga_redis_up") == 0
    assert "saga_sagas_stuck" not in down
    assert metric(back, "saga_ready") == 1 and metric(back, "saga_sagas_stuck") == 0


async def test_saga_ready_is_0_without_partitions_though_redis_answers(settings: Settings) -> None:
    """An API without a daemon owns no partition: /readyz 503 and saga_ready 0, while Redis
    answers (saga_redis_up 1, the stuck count present and 0)."""
    async with api_alone(settings) as http:
        probe = await http.get("/readyz")
        text = (await http.get("/metrics")).text
    assert probe.status_code == 503 and probe.json()["problems"] == ["no partitions assigned"]
    assert metric(text, "saga_ready") == 0
    assert metric(text, "saga_redis_up") == 1 and metric(text, "saga_sagas_stuck") == 0


def test_the_stuck_count_is_capped_and_absent_when_unknown() -> None:
    """Above the cap the gauge shows the cap (its help says: at least); unknown, no line and no
    family; readiness defaults to not ready, so only a real check reports 1."""
    many = Metrics().render(Gauges(sagas_stuck=STUCK_COUNT_CAP * 3, ready=True))
    unknown = Metrics().render(Gauges())
    assert metric(many, "saga_sagas_stuck") == STUCK_COUNT_CAP
    assert f"counted up to {STUCK_COUNT_CAP}, which means at least that" in many
    assert metric(many, "saga_ready") == 1
    assert "saga_sagas_stuck" not in unknown
    assert metric(unknown, "saga_ready") == 0


def test_stuck_after_defaults_to_the_cli_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """600 s, the 10m of `saga stuck --older-than`; read from SAGA_STUCK_AFTER_S."""
    monkeypatch.delenv("SAGA_STUCK_AFTER_S", raising=False)
    assert OrchestratorSettings().stuck_after_s == 600.0
    monkeypatch.setenv("SAGA_STUCK_AFTER_S", "2.5")
    assert OrchestratorSettings().stuck_after_s == 2.5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "greater than 0"),
        ("-5", "greater than 0"),
        ("abc", "valid number"),
        ("", "valid number"),
        ("inf", "finite number"),
        ("nan", "finite number"),
        ("1e400", "finite number"),
        ("99999999", "less than or equal to 2592000"),
        ("10m", "valid number"),
    ],
)
def test_bad_stuck_after_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    """Zero, negative, not a number, infinite, beyond 30 days, or a duration string: refused,
    the error names the setting and why."""
    monkeypatch.setenv("SAGA_STUCK_AFTER_S", value)
    with pytest.raises(ValidationError, match="stuck_after_s") as raised:
        OrchestratorSettings()
    assert message in str(raised.value)


def test_bad_stuck_after_stops_the_orchestrator_in_one_line() -> None:
    """`saga orchestrator run` with SAGA_STUCK_AFTER_S=0: one line naming it, exit code 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", "orchestrator", "run"],
        env={**os.environ, "SAGA_STUCK_AFTER_S": "0", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == ["error: setting SAGA_STUCK_AFTER_S: Input should be greater than 0 (got '0')"]
