"""Signals end to end on the real Kafka and Redis: a real orchestrator process running the trip
saga module (`SAGA_SAGA_MODULES`), the four trip workers, trips started with kcat as a person
types them, and signals sent the three ways: `saga signal` (a subprocess), the HTTP API, and a
raw JSON record on the events topic. Outcomes are read from the saga hashes, their histories
and the workers' own records."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from participants.samples.trip.workers import build_all, snapshot
from participants.sdk import run_many
from participants.testing import FAST
from schemas.config import Settings
from schemas.dlq import H_ERROR_MESSAGE, header
from tests.conftest import TRIP_TOPICS
from tests.support.kafka import read_all, wait_for
from tests.support.orch import SagaReader
from tests.support.procs import ROOT, orchestrator_env, start_orchestrator, stop
from tests.test_http import free_port
from tests.test_http_auth import OPERATE, READ, TOKENS

# the workers' command topics exist before they start, as in a deployment
pytestmark = TRIP_TOPICS

TRIP_MODULES = '["participants.samples.trip.saga"]'
BOOKERS = ("flight", "hotel", "car")


@pytest.fixture(autouse=True)
def _kcat() -> None:
    if shutil.which("kcat") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kcat is missing (scripts/stack up installs it)", pytrace=False)
        pytest.skip("kcat is missing (scripts/stack up installs it)")


async def kcat(settings: Settings, topic: str, key: str, *docs: dict[str, Any]) -> None:
    """Produce JSON records with kcat, one a line, keyed by `key`: as a person would."""
    lines = b"".join(orjson.dumps(d) + b"\n" for d in docs)
    proc = await asyncio.create_subprocess_exec(
        "kcat", "-P", "-b", settings.kafka_bootstrap_servers, "-t", topic, "-k", key,
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(lines), 60)
    assert proc.returncode == 0, err.decode()


async def start_trip(settings: Settings, sid: str, amount: int) -> None:
    doc = {"sagaId": sid, "command": "StartSaga", "sagaType": "trip_booking",
           "data": {"customerId": "c-1", "amount": amount}}  # fmt: skip
    await kcat(settings, settings.commands_topic, sid, doc)


async def saga_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    """`saga <args>` as a subprocess, configured by SAGA_* variables as a person's shell is."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.ops.cli", *args,
        env=orchestrator_env(settings, SAGA_SAGA_MODULES=TRIP_MODULES), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def trip_stack(
    settings: Settings, tmp_path: Path, approval_timeout_s: float = 600
) -> AsyncIterator[httpx.AsyncClient]:
    """The orchestrator process (trip saga module, HTTP API with tokens) and the trip workers
    in this process; yields a client of the orchestrator's HTTP API."""
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    port = free_port()
    proc = start_orchestrator(
        settings,
        tmp_path / "orchestrator.log",
        SAGA_SAGA_MODULES=TRIP_MODULES,
        SAGA_TRIP_APPROVAL_TIMEOUT_S=str(approval_timeout_s),
        SAGA_HTTP_PORT=str(port),
        SAGA_HTTP_TOKENS_FILE=str(tokens),
    )
    stop_workers = asyncio.Event()
    workers = asyncio.create_task(run_many(settings, build_all(), stop_workers, FAST))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def ready() -> bool:
                assert proc.poll() is None, (tmp_path / "orchestrator.log").read_text()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/readyz")).status_code == 200
                return False

            await wait_for(ready, 120, "the orchestrator to be ready", interval_s=0.2)
            yield http
    finally:
        stop_workers.set()
        stop(proc)
        await asyncio.wait_for(workers, 60)


async def wait_waiting(reader: SagaReader, sid: str) -> None:
    async def waiting() -> bool:
        return (await reader.fields(sid)).get("step.approval.status") == "waiting"

    await wait_for(waiting, 120, f"{sid} to wait for its approval", interval_s=0.2)


async def signal_entries(reader: SagaReader, sid: str) -> list[dict[str, str]]:
    return [h for h in await reader.history(sid) if h.get("event") == "Signal"]


async def test_a_kcat_trip_waits_until_saga_signal_approve(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """A trip of 5000 sent with kcat books its flight, hotel and car and stays unfinished,
    waiting on approval (`saga status` says for which signals), until `saga signal <id>
    approve`; then it is charged and completes. A trip of 200 completes with no signal. A
    signal for a saga that is not waiting is refused by the CLI with the reason, and when sent
    anyway (--force) the orchestrator records the refusal in the history and changes nothing."""
    async with trip_stack(settings, tmp_path):
        await start_trip(settings, "big", 5000)
        await start_trip(settings, "small", 200)
        assert await reader.wait_final(["small"], timeout_s=120) == {"small": "completed"}
        await wait_waiting(reader, "big")
        big = await reader.fields("big")
        assert big["state"] == "pending"
        assert big.get("step.take_payment.status", "pending") == "pending"  # defaults are left out
        assert "big" not in (await snapshot(settings)).charges
        code, out, err = await saga_cli(settings, "status", "big")
        assert code == 0, err
        assert "waits for 'approve' or 'reject'" in out

        code, out, err = await saga_cli(
            settings, "signal", "big", "approve", "--reason", "within budget", "--wait", "60"
        )
        assert code == 0, err
        assert out.startswith("sent signal approve to big") and "; applied: " in out, out
        assert await reader.wait_final(["big"], timeout_s=120) == {"big": "completed"}

        code, _, err = await saga_cli(settings, "signal", "small", "approve")
        assert code == 1
        assert err.strip() == (
            "error: saga small is not waiting for signal 'approve': saga is completed"
        )
        code, out, err = await saga_cli(
            settings, "signal", "small", "approve", "--force", "--wait", "60", "--json"
        )
        assert code == 0, err
        forced = orjson.loads(out)

    big = await reader.fields("big")
    assert big["step.approval.status"] == "completed"
    assert orjson.loads(big["step.approval.result"])["reason"] == "within budget"
    [applied] = await signal_entries(reader, "big")
    assert applied["outcome"] == "applied"
    small = await reader.fields("small")
    assert small["step.approval.status"] == "skipped" and small["state"] == "completed"
    [refused] = await signal_entries(reader, "small")
    assert (refused["outcome"], refused["input"]) == ("ignored", forced["messageId"])
    assert "refused (saga is completed)" in refused["note"]
    assert forced["outcome"] == "ignored" and forced["note"] == refused["note"]
    ledgers = await snapshot(settings)
    assert ledgers.net_paid() == {"big": 5000, "small": 200}


async def test_reject_over_http_cancels_the_bookings(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """`POST /api/sagas/<id>/signals/reject` with an operate token (202, status link; a read
    token gets 403): the trip fails, its flight, hotel and car are cancelled, nothing is
    charged. Then the saga waits for nothing: 409 with the reason; an unknown saga is 404."""
    async with trip_stack(settings, tmp_path) as http:
        await start_trip(settings, "rejected", 5000)
        await wait_waiting(reader, "rejected")
        path = "/api/sagas/rejected/signals/reject"
        body = {"reason": "over budget", "data": {"by": "finance"}}
        read = await http.post(path, json=body, headers=READ)
        sent = await http.post(path, json=body, headers=OPERATE)
        assert await reader.wait_final(["rejected"], timeout_s=120) == {"rejected": "failed"}
        again = await http.post("/api/sagas/rejected/signals/approve", headers=OPERATE)
        unknown = await http.post("/api/sagas/nobody/signals/approve", headers=OPERATE)
        status = await http.get(sent.json()["status"], headers=READ)
    assert read.status_code == 403, read.text
    assert sent.status_code == 202, sent.text
    assert status.status_code == 200 and status.json()["state"] == "failed"
    assert again.status_code == 409
    assert again.json()["error"] == (
        "saga rejected is not waiting for signal 'approve': saga is failed"
    )
    assert unknown.status_code == 404
    fields = await reader.fields("rejected")
    assert fields["step.approval.status"] == "failed"
    assert fields["step.approval.error"] == "rejected by signal 'reject' from ops-alice"
    assert orjson.loads(fields["step.approval.result"]) == {
        "by": "finance",
        "reason": "over budget",
    }
    assert all(fields[f"step.book_{b}.status"] == "compensated" for b in BOOKERS)
    assert fields.get("step.take_payment.status", "pending") == "pending"  # defaults left out
    ledgers = await snapshot(settings)
    for b in BOOKERS:
        assert ledgers.bookings[b]["rejected"]["status"] == "cancelled"
    assert "rejected" not in ledgers.charges


async def test_a_raw_kafka_signal_applies_once(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """A Signal typed as JSON into kcat on the events topic approves the trip. The same record
    sent twice (same messageId) applies once and is not recorded again; a second approve with
    another id (no messageId: its log position is its id) is recorded as refused. A signal for
    no saga, and one with a bad name, go to the dead-letter topic with the reason."""
    async with trip_stack(settings, tmp_path):
        await start_trip(settings, "raw", 5000)
        await wait_waiting(reader, "raw")
        signal = {"sagaId": "raw", "messageType": "Signal", "messageId": "sig-raw-1",
                  "name": "approve", "data": {"ticket": 42}, "sender": "kcat"}  # fmt: skip
        # one partition (same key): the id-less approve is read after both copies
        await kcat(settings, settings.events_topic, "raw", signal, signal,
                   {"sagaId": "raw", "messageType": "Signal", "name": "approve"})  # fmt: skip

        async def both_recorded() -> bool:
            return len(await signal_entries(reader, "raw")) >= 2

        await wait_for(both_recorded, 120, "both approvals recorded", interval_s=0.2)
        assert await reader.wait_final(["raw"], timeout_s=120) == {"raw": "completed"}
        # poison never blocks: a signal for no saga and a malformed one are dead-lettered
        await kcat(settings, settings.events_topic, "ghost",
                   {"sagaId": "ghost", "messageType": "Signal", "name": "approve"},
                   {"sagaId": "ghost", "messageType": "Signal", "name": "ap prove"})  # fmt: skip
        letters = await read_all(settings, settings.dlq_topic, 2, timeout_s=120)
    reasons = sorted(header(r.headers, H_ERROR_MESSAGE) or "" for r in letters)
    assert reasons[0].startswith("Signal invalid name"), reasons
    assert reasons[1] == "signal approve for an unknown saga", reasons
    entries = await signal_entries(reader, "raw")
    assert len(entries) == 2, entries  # the duplicate copy left no trace
    first, second = entries
    assert first["input"] == "sig-raw-1"
    assert first["outcome"] == "applied" and "from kcat" in first["note"]
    assert second["outcome"] == "ignored" and second["input"].startswith(settings.events_topic)
    assert "refused (" in second["note"], second["note"]
    fields = await reader.fields("raw")
    assert orjson.loads(fields["step.approval.result"]) == {"ticket": "42"}
    assert (await snapshot(settings)).net_paid() == {"raw": 5000}


async def test_approval_timeout_cancels_the_bookings(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """With `SAGA_TRIP_APPROVAL_TIMEOUT_S=2` a trip nobody approves fails when the wait ends:
    the approval times out, the three bookings are cancelled; a late approve is refused."""
    async with trip_stack(settings, tmp_path, approval_timeout_s=2):
        await start_trip(settings, "late", 5000)
        assert await reader.wait_final(["late"], timeout_s=120) == {"late": "failed"}
        code, _, err = await saga_cli(settings, "signal", "late", "approve")
        assert code == 1 and "saga is failed" in err, err
    fields = await reader.fields("late")
    assert fields["step.approval.status"] == "timed_out"
    assert "no signal 'approve' within 2s" in fields["last_error"]
    assert all(fields[f"step.book_{b}.status"] == "compensated" for b in BOOKERS)
    ledgers = await snapshot(settings)
    for b in BOOKERS:
        assert ledgers.bookings[b]["late"]["status"] == "cancelled"
    assert "late" not in ledgers.charges
