"""Crashes and scale-out with real orchestrator processes: SIGKILL mid-run, a second copy in
the group, one copy stopped mid-run. Every saga reaches a final state, none is lost, nothing
is applied twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from schemas.config import Settings
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader
from tests.support.procs import kill, start_orchestrator
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_e2e import ACTIONS, start_order

N_SAGAS = 1000
PATIENT = {"SAGA_SAGA_MODULES": '["tests.support.sagas_patient"]'}


async def completed_count(reader: SagaReader) -> int:
    keys = reader.keys
    return sum(
        [int(await reader.redis.zcard(keys.index("completed", s))) for s in keys.all_shards()]
    )


async def assert_exactly_once(reader: SagaReader, p: ScriptedParticipant, ids: list[str]) -> None:
    states = await reader.wait_final(ids, timeout_s=180)
    assert set(states.values()) == {"completed"}
    for sid in ids:
        fields = await reader.fields(sid)
        assert fields["version"] == "5", sid
        applied = [h for h in await reader.history(sid) if h["outcome"] == "applied"]
        assert len(applied) == 5, (sid, applied)
        # commands may be re-sent after a crash, but always with the same ids: one per step
        ids_seen = {c.message_id for c in p.by_saga[sid]}
        assert ids_seen == {f"{sid}:{s}:action:1" for s in _steps()}, sid
        assert sorted({c.command_type for c in p.by_saga[sid]}) == sorted(ACTIONS)


def _steps() -> list[str]:
    return ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]


async def test_sigkill_mid_run_then_restart(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """SIGKILL with hundreds of sagas in flight, restart: all complete, exactly once."""
    ids = [f"crash-{i}" for i in range(N_SAGAS)]
    async with ScriptedParticipant(settings, batch_delay_s=0.1) as p:
        proc = start_orchestrator(settings, tmp_path / "orch.log", **PATIENT)
        try:
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids]
            )

            async def some_done() -> bool:
                assert proc.poll() is None, (tmp_path / "orch.log").read_text()[-3000:]
                return await completed_count(reader) >= 30

            await wait_for(some_done, 120, "the first sagas to complete")
            kill(proc, signal.SIGKILL)
            in_flight = N_SAGAS - await completed_count(reader)
            assert in_flight >= 500, f"only {in_flight} in flight at the kill"
            proc = start_orchestrator(settings, tmp_path / "orch.log", **PATIENT)
            await assert_exactly_once(reader, p, ids)
        finally:
            if proc.poll() is None:
                kill(proc, signal.SIGTERM)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_two_copies_one_stopped_mid_run(
    settings: Settings, reader: SagaReader, tmp_path: Path, how: signal.Signals
) -> None:
    """Two copies share the partitions; one stops mid-run; the other finishes every saga."""
    ids = [f"pair-{i}" for i in range(N_SAGAS)]
    async with ScriptedParticipant(settings, batch_delay_s=0.1) as p:
        a = start_orchestrator(settings, tmp_path / "a.log", **PATIENT)
        b = start_orchestrator(settings, tmp_path / "b.log", **PATIENT)
        try:
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids]
            )

            async def some_done() -> bool:
                return await completed_count(reader) >= 30

            await wait_for(some_done, 120, "the first sagas to complete")
            code = kill(a, how)
            if how == signal.SIGTERM:
                assert code == 0, (tmp_path / "a.log").read_text()[-3000:]
            await assert_exactly_once(reader, p, ids)
        finally:
            for proc in (a, b):
                if proc.poll() is None:
                    kill(proc, signal.SIGTERM)
