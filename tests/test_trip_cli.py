"""`saga trip start` and `saga trip show`: hostile input refused before any connection (one
line, exit 2), and a trip started from the CLI against the running orchestrator and workers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.ops.cli import app
from participants.cli import installed, participants_named
from participants.samples.trip.demo import BOTH_SAMPLES
from participants.samples.trip.start import SAGA_TYPE, start_trip
from participants.testing import TopicReader, command
from participants.testing import produce as produce_commands
from schemas.config import Settings
from schemas.messages import StartSaga, StepCompleted
from tests.conftest import TRIP_TOPICS
from tests.support.kafka import wait_for
from tests.support.orch import SagaReader
from tests.support.procs import ROOT, orchestrator_env
from tests.test_ops_cli_e2e import Result, cli
from tests.test_trip_e2e import trips  # noqa: F401  (the fixture)

# the workers' command topics exist before they start, as in a deployment
pytestmark = TRIP_TOPICS

#: nothing listens here: a command that got past validation would fail with exit 1, not 2
ENV = {"SAGA_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "SAGA_REDIS_URL": "redis://127.0.0.1:1/0"}
OK = ["--customer", "c-1", "--amount", "200"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--amount", "200"], "needs a customerId"),
        (["--customer", "c-1"], "amount must be a JSON number"),
        (["--customer", "", "--amount", "1"], "needs a customerId"),
        (["--customer", "c-1", "--amount", "5k"], "invalid amount '5k'"),
        (["--customer", "c-1", "--amount", "NaN"], "invalid amount 'NaN'"),
        (["--customer", "c-1", "--amount", "1e400"], "invalid amount '1e400'"),
        (["--customer", "c-1", "--amount", "true"], "invalid amount 'true'"),
        (["--customer", "c-1", "--amount", '"200"'], "invalid amount"),
        (["--customer", "c-1", "--amount", "-5"], "amount must be a JSON number from 0"),
        ([*OK, "--flight", "not json"], "--flight: invalid JSON"),
        ([*OK, "--hotel", "[1, 2]"], "--hotel: expected a JSON object"),
        ([*OK, "--car", '{"seats": 9}'], "car: unknown option 'seats'"),
        ([*OK, "--hotel", '{"nights": 0}'], "hotel.nights must be a whole number"),
        ([*OK, "--flight", '{"soldOut": 1}'], "flight.soldOut must be true or false"),
        ([*OK, "--saga-id", "a b"], "invalid saga id"),
        ([*OK, "--saga-id", "x" * 129], "invalid saga id"),
        ([*OK, "--file", "/nonexistent/trip.json"], "no such file"),
    ],
)
def test_bad_trips_are_refused_at_the_prompt(args: list[str], needle: str) -> None:
    """Malformed input: one line on stderr naming the problem, exit 2, nothing sent."""
    res = CliRunner().invoke(app, ["trip", "start", *args], env=ENV)
    assert res.exit_code == 2, (args, res.exit_code, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr


def test_a_forced_failure_is_a_valid_request() -> None:
    """A sold-out flight or a hotel in Atlantis is how a failing branch is asked for: accepted."""
    msg = start_trip(
        {"customerId": "c", "amount": 1, "flight": {"soldOut": True}, "hotel": {"city": "Atlantis"}}
    )
    assert isinstance(msg, StartSaga) and msg.saga_type == SAGA_TYPE and len(msg.saga_id) == 32


def test_a_file_and_flags_combine(tmp_path: Path) -> None:
    """The file gives the data, flags win; a file that is not a JSON object is refused."""
    good = tmp_path / "trip.json"
    good.write_text('{"customerId": "from-file", "amount": 10, "car": {"days": 3}}')
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    res = CliRunner().invoke(app, ["trip", "start", "-f", str(bad)], env=ENV)
    assert res.exit_code == 2 and "expected a JSON object" in res.stderr
    # past validation, the unreachable Kafka makes it exit 1: the data was accepted
    res = CliRunner().invoke(app, ["trip", "start", "-f", str(good), "--amount", "20"], env=ENV)
    assert res.exit_code == 1 and "did not answer" in res.stderr, res.stderr


async def test_start_then_show_a_trip(
    settings: Settings,
    reader: SagaReader,
    trips: None,  # noqa: F811
) -> None:
    """`saga trip start` sends a StartSaga the orchestrator runs: a trip of 5000 is booked and
    waits for approval; `saga trip show` prints its three bookings and no charge yet (an
    unknown trip is exit 1); a misspelt signal is refused; `saga signal <id> approve`
    completes it and it is charged."""
    async with TopicReader(settings, settings.commands_topic) as commands:
        res = await cli(
            settings, "trip", "start", "--customer", "c-7", "--amount", "5000",
            "--saga-id", "cli-trip", "--hotel", '{"city": "Oslo", "nights": 3}', "--json",
        )  # fmt: skip
        assert res.json()["sagaId"] == "cli-trip"
        seen = await commands.until(lambda rs: any(r.key == b"cli-trip" for r in rs))
    sent = next(r.message for r in seen if r.key == b"cli-trip")
    assert isinstance(sent, StartSaga) and sent.saga_type == "trip_booking"
    assert sent.data == {
        "customerId": "c-7",
        "amount": 5000,
        "hotel": {"city": "Oslo", "nights": 3},
    }

    async def waits() -> bool:
        return (await reader.fields("cli-trip")).get("step.approval.status") == "waiting"

    await wait_for(waits, 120, "cli-trip to wait for approval", interval_s=0.2)
    shown = (await cli(settings, "trip", "show", "cli-trip")).json()
    assert shown["payment"] is None
    assert {k: shown[k]["status"] for k in ("flight", "hotel", "car")} == {
        "flight": "booked",
        "hotel": "booked",
        "car": "booked",
    }
    assert shown["hotel"]["city"] == "Oslo" and shown["hotel"]["customerId"] == "c-7"
    missing = await cli(settings, "trip", "show", "no-such-trip")
    assert missing.code == 1 and "no booking or charge recorded" in missing.err

    typo = await saga(settings, "signal", "cli-trip", "aprove")
    assert typo.code == 1 and "'aprove'" in typo.err, typo.err
    sent = await saga(settings, "signal", "cli-trip", "approve", "--data", '{"by": "ops"}')
    assert sent.code == 0, sent.err
    assert (await reader.wait_final(["cli-trip"], timeout_s=120)) == {"cli-trip": "completed"}
    paid = (await cli(settings, "trip", "show", "cli-trip")).json()["payment"]
    assert (paid["amount"], paid["status"]) == ("5000.00", "charged")


async def saga(settings: Settings, *args: str) -> Result:
    """`saga <args>` as a subprocess that loads both samples' saga modules, as `scripts/run`
    sets them (`saga signal` checks the saga's definition before it sends)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.ops.cli", *args,
        env=orchestrator_env(settings, SAGA_SAGA_MODULES=BOTH_SAMPLES), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return Result(proc.returncode or 0, out.decode(), err.decode())


def test_the_trip_entry_points_are_installed() -> None:
    """`saga participant run flight|hotel|car|trip_payment|trip` resolve; `saga trip` exists."""
    assert {"flight", "hotel", "car", "trip_payment", "trip"} <= set(installed())
    assert [p.name for p in participants_named("trip")] == [
        "flight",
        "hotel",
        "car",
        "trip_payment",
    ]
    assert [p.name for p in participants_named("hotel")] == ["hotel"]
    assert "trip" in {g.name for g in app.registered_groups}


async def test_each_worker_runs_as_its_own_process(settings: Settings, tmp_path: Path) -> None:
    """`saga participant run flight`, `... hotel`, `... car` and `... trip_payment` as four
    processes: each answers its own command, and SIGTERM ends each with exit code 0."""
    names = ["flight", "hotel", "car", "trip_payment"]
    env = orchestrator_env(settings)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.ops.cli", "participant", "run", name],
            env=env, cwd=ROOT, stdout=(tmp_path / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for name in names
    ]  # fmt: skip
    data = {"customerId": "c-1", "amount": 200}
    cmds = [
        command("proc-1", "flight", "BookFlight", "book_flight", data=data),
        command("proc-1", "hotel", "BookHotel", "book_hotel", data=data),
        command("proc-1", "car", "BookCar", "book_car", data=data),
        command("proc-1", "trip_payment", "TakePayment", "take_payment", data=data),
    ]
    try:
        async with TopicReader(settings, settings.events_topic) as events:
            await produce_commands(settings, cmds)
            replies = await events.replies([c.message_id for c in cmds], timeout_s=120)
        assert all(isinstance(r, StepCompleted) for r in replies.values()), replies
        assert replies[cmds[3].message_id].result == {"chargeId": "tch-proc-1", "amount": "200.00"}
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
