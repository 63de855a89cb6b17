"""The `saga` operations commands as a person runs them (subprocesses with SAGA_* settings)
against a running orchestrator on the real Kafka and Redis."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from orchestrator.core.definition import Registry
from schemas.config import Settings
from schemas.messages import SagaCommand
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader, running
from tests.support.procs import ROOT, orchestrator_env
from tests.support.sagas_patient import ORDER_PATIENT
from tests.support.scripted import Answer, ScriptedParticipant
from tests.test_orchestrator_e2e import start_order


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, (self.code, self.err)
        return orjson.loads(self.out)


async def cli(settings: Settings, *args: str) -> Result:
    """Run `saga <args>` in a subprocess configured by SAGA_* environment variables."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.ops.cli",
        *args,
        env=orchestrator_env(settings),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def wait_listed(settings: Settings, saga_id: str, *args: str, timeout_s: float = 60) -> None:
    """Poll a listing command until it names the saga."""

    async def listed() -> bool:
        return any(s["saga_id"] == saga_id for s in (await cli(settings, *args, "--json")).json())

    await wait_for(listed, timeout_s, f"{saga_id} in `saga {' '.join(args)}`", interval_s=0.2)


def saga_is(reader: SagaReader, sid: str, *states: str) -> Any:
    async def check() -> bool:
        return await reader.state(sid) in states

    return check


async def test_start_order_status_and_list(settings: Settings, reader: SagaReader) -> None:
    """start-order prints the saga id; status shows state, steps and timeline; list filters."""
    async with ScriptedParticipant(settings) as p, running(settings):
        started = await cli(
            settings,
            "start-order",
            "--customer",
            "c-9",
            "--item",
            "sku-1:2",
            "--item",
            "sku-2",
            "--amount",
            "12.50",
            "--saga-id",
            "cli-order-1",
        )
        assert started.code == 0, started.err
        assert started.out.strip() == "cli-order-1"
        assert (await reader.wait_final(["cli-order-1"]))["cli-order-1"] == "completed"
        generated = (
            await cli(
                settings, "start-order", "--customer", "c", "--item", "x", "--amount", "1", "--json"
            )
        ).json()
        gen_id = generated["sagaId"]
        await reader.wait_final([gen_id])
        status = (await cli(settings, "status", "cli-order-1", "--json")).json()
        table = await cli(settings, "status", "cli-order-1")
        completed = (await cli(settings, "list", "--state", "completed", "--json")).json()
        typed = (await cli(settings, "list", "--type", "other_saga", "--json")).json()
        old = (await cli(settings, "list", "--older-than", "1h", "--json")).json()
        missing = await cli(settings, "status", "no-such-saga")
    assert len(p.by_saga["cli-order-1"]) == 4
    assert status["state"] == "completed"
    assert [s["name"] for s in status["steps"]] == [
        "reserve_inventory",
        "process_payment",
        "create_shipment",
        "send_confirmation",
    ]
    assert {s["status"] for s in status["steps"]} == {"completed"}
    assert [h["state"] for h in status["timeline"]] == ["started"] + ["pending"] * 3 + ["completed"]
    assert orjson.loads(status["data"])["items"][1] == {"productId": "sku-2", "quantity": 1}
    assert "send_confirmation" in table.out and "completed" in table.out
    assert {s["saga_id"] for s in completed} == {"cli-order-1", gen_id}
    assert typed == [] and old == []
    assert missing.code == 1 and "no saga 'no-such-saga'" in missing.err


async def test_stuck_compensation_found_resumed_and_finished(
    settings: Settings, reader: SagaReader
) -> None:
    """A compensation that keeps failing leaves the saga in needs_intervention; `saga stuck`
    finds it; a command that cannot apply is refused; after the fix, `saga resume` finishes the
    compensation and the saga ends failed."""
    broken = {"on": True}

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.step == "process_payment" and not cmd.compensation:
            return "fail"
        if cmd.step == "reserve_inventory" and cmd.compensation and broken["on"]:
            return "fail"
        return "ok"

    sid = "stuck-comp-1"
    async with ScriptedParticipant(settings, behaviour) as p, running(settings):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        await wait_for(saga_is(reader, sid, "needs_intervention"), 60, "needs_intervention")
        await wait_listed(settings, sid, "stuck", "--older-than", "500ms")
        human = await cli(settings, "stuck", "--older-than", "500ms")
        refused = await cli(settings, "abort", sid)
        unknown = await cli(settings, "retry", "nobody-here")
        broken["on"] = False
        resumed = (
            await cli(
                settings, "resume", sid, "--reason", "inventory fixed", "--wait", "30", "--json"
            )
        ).json()
        assert (await reader.wait_final([sid]))[sid] == "failed"
        again = await cli(settings, "resume", sid)
        not_stuck = (await cli(settings, "stuck", "--older-than", "500ms", "--json")).json()
    assert sid in human.out and "needs_intervention" in human.out
    assert refused.code == 1 and "abort applies to a started or pending saga" in refused.err
    assert unknown.code == 1 and "no saga 'nobody-here'" in unknown.err
    assert resumed["applied"] is True
    assert again.code == 1 and "final" in again.err
    assert sid not in {s["saga_id"] for s in not_stuck}
    releases = [c for c in p.by_saga[sid] if c.command_type == "ReleaseReservation"]
    assert len(releases) >= 2 and releases[-1].attempt == len(releases)
    fields = await reader.fields(sid)
    assert fields["step.reserve_inventory.status"] == "compensated"
    history = await reader.history(sid)
    assert any("operator resume" in h["note"] and "inventory fixed" in h["note"] for h in history)


async def test_skip_compensation_records_the_reason(settings: Settings, reader: SagaReader) -> None:
    """A compensation done by hand is recorded with its reason and the rollback goes on."""

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.step == "create_shipment" and not cmd.compensation:
            return "fail"
        if cmd.step == "process_payment" and cmd.compensation:
            return "fail"
        return "ok"

    sid = "skip-comp-1"
    async with ScriptedParticipant(settings, behaviour) as p, running(settings):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        await wait_for(saga_is(reader, sid, "needs_intervention"), 60, "needs_intervention")
        not_pending = await cli(
            settings, "skip-compensation", sid, "--step", "reserve_inventory", "--reason", "x"
        )
        no_step = await cli(settings, "skip-compensation", sid, "--step", "nope", "--reason", "x")
        done = await cli(
            settings,
            "skip-compensation",
            sid,
            "--step",
            "process_payment",
            "--reason",
            "refunded by hand in the PSP",
            "--operator",
            "alice",
            "--wait",
            "30",
        )
        assert done.code == 0, done.err
        assert (await reader.wait_final([sid]))[sid] == "failed"
    assert not_pending.code == 1 and "not pending" in not_pending.err
    assert no_step.code == 2 and "has no step 'nope'" in no_step.err
    fields = await reader.fields(sid)
    assert fields["step.process_payment.status"] == "compensation_skipped"
    assert "refunded by hand in the PSP" in fields["step.process_payment.error"]
    assert fields["step.reserve_inventory.status"] == "compensated"
    assert [c.command_type for c in p.by_saga[sid]][-1] == "ReleaseReservation"
    notes = [h["note"] for h in await reader.history(sid)]
    assert any("skip_compensation process_payment by alice" in n for n in notes)


async def test_forward_stuck_saga_is_retried_by_hand(
    settings: Settings, reader: SagaReader
) -> None:
    """A step whose participant lost the command (long timeout) is found by `saga stuck` and
    `saga retry` re-issues it; the saga then completes."""
    lost = {"on": True}

    def behaviour(cmd: SagaCommand) -> Answer:
        return "silent" if cmd.step == "reserve_inventory" and lost["on"] else "ok"

    sid = "stuck-fwd-1"
    async with (
        ScriptedParticipant(settings, behaviour) as p,
        running(settings, Registry([ORDER_PATIENT])),
    ):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        await wait_listed(settings, sid, "stuck", "--older-than", "1s")
        lost["on"] = False
        retried = await cli(settings, "retry", sid, "--reason", "lost command", "--wait", "30")
        assert retried.code == 0, retried.err
        assert (await reader.wait_final([sid]))[sid] == "completed"
    assert "saga is now" in retried.out
    reserves = [c for c in p.by_saga[sid] if c.step == "reserve_inventory"]
    assert [c.attempt for c in reserves] == [1, 2]
    assert (await reader.fields(sid))["step.reserve_inventory.attempts"] == "2"


async def test_abort_compensates_now(settings: Settings, reader: SagaReader) -> None:
    """`saga abort` stops a saga going forward; the step in flight is compensated too."""

    def behaviour(cmd: SagaCommand) -> Answer:
        return "silent" if cmd.step == "process_payment" and not cmd.compensation else "ok"

    sid = "abort-1"
    async with (
        ScriptedParticipant(settings, behaviour) as p,
        running(settings, Registry([ORDER_PATIENT])),
    ):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        await wait_for(saga_is(reader, sid, "pending"), 60, "payment in flight")
        aborted = await cli(settings, "abort", sid, "--reason", "customer cancelled", "--json")
        assert (await reader.wait_final([sid]))[sid] == "failed"
    assert aborted.json()["action"] == "abort"
    assert [c.command_type for c in p.by_saga[sid]] == [
        "ReserveItems",
        "ProcessPayment",
        "RefundPayment",
        "ReleaseReservation",
    ]
