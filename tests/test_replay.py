"""`saga replay` and the golden histories of the shipped definitions.

- Every golden file under tests/golden/ (recorded from real runs, `tests/golden/record.py`)
  replays with no divergence under the definitions that ship: a change to the order or trip
  saga that would send an in-flight saga another way fails here.
- An incompatible version (a step inserted, a compensation renamed) is reported at the first
  input it decides differently; a compatible one (longer timeouts) replays clean.
- `saga replay --history <saga id>` against a saga run by the real orchestrator over the real
  Kafka and Redis, `--export` of it, and the file replayed.
- Hostile input: one line on stderr, exit 2 (1 for an unknown saga).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from orchestrator.core.model import Start
from orchestrator.core.replay import Recorded, replay
from orchestrator.engine.history import HISTORY_CAP
from orchestrator.ops import RefusedError
from orchestrator.ops.cli import app
from orchestrator.ops.replay_io import entry_event, from_redis, parse_file
from participants.keys import SdkKeys
from participants.samples.faults import inject as faults
from participants.samples.order.saga import ORDER_FULFILLMENT
from participants.samples.order.workers import build_all, seed_stock
from participants.samples.trip.saga import TRIP_BOOKING
from participants.sdk import run_many
from schemas.config import Settings
from tests.conftest import ORDER_TOPICS
from tests.golden import variants
from tests.support.kafka import produce
from tests.support.orch import SagaReader, running
from tests.support.procs import ROOT, orchestrator_env

GOLDEN = Path(__file__).resolve().parent / "golden"
SHIPPED = {d.name: d for d in (ORDER_FULFILLMENT, TRIP_BOOKING)}
#: each scenario the golden set must hold, and how the saga ended
EXPECTED = {
    "order_fulfillment/completed": "completed",
    "order_fulfillment/payment_declined": "failed",
    "order_fulfillment/retry_then_success": "completed",
    "order_fulfillment/payment_timeout": "completed",
    "trip_booking/small_trip": "completed",
    "trip_booking/large_trip_approved": "completed",
    "trip_booking/rejected": "failed",
    "trip_booking/approval_timeout": "failed",
    "trip_booking/branch_failure": "failed",
}
FILES = sorted(GOLDEN.glob("*/*.jsonl"))


def test_the_golden_set_holds_every_scenario() -> None:
    """The files are there and each ends as its scenario did (a golden file of a saga that
    went nowhere would replay clean and prove little)."""
    assert {f"{p.parent.name}/{p.stem}" for p in FILES} == set(EXPECTED)
    for name, final in EXPECTED.items():
        path = GOLDEN / f"{name}.jsonl"
        h = parse_file(path.read_bytes(), str(path))
        assert h.inputs[-1].expected.status == final, name
        assert all(r.expected.steps and r.expected.commands is not None for r in h.inputs), name


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_histories_replay_clean_under_the_shipped_definitions(path: Path) -> None:
    h = parse_file(path.read_bytes(), str(path))
    found = replay(SHIPPED[h.saga_type], h.inputs)
    assert found is None, found.describe()


def golden(name: str) -> list[Recorded]:
    path = GOLDEN / f"{name}.jsonl"
    return parse_file(path.read_bytes(), str(path)).inputs


def test_a_step_inserted_diverges_at_the_start() -> None:
    """Every step is compared from the first input: the new step exists only on one side."""
    d = replay(variants.ORDER_STEP_INSERTED, golden("order_fulfillment/completed"))
    assert d is not None and d.index == 0
    assert d.reason == "step check_fraud is pending, recorded absent"


def test_a_renamed_compensation_diverges_where_it_is_sent() -> None:
    """The declined payment is where ReleaseReservation went out: input 2 (start, reserved,
    payment failed)."""
    history = golden("order_fulfillment/payment_declined")
    assert replay(variants.ORDER_COMPENSATION_RENAMED, history[:2]) is None
    d = replay(variants.ORDER_COMPENSATION_RENAMED, history)
    assert d is not None and d.index == 2, d and d.describe()
    assert d.reason == (
        "sent inventory/CancelReservation reserve_inventory#1, recorded "
        "inventory/ReleaseReservation reserve_inventory#1"
    )
    assert "sent [inventory/ReleaseReservation reserve_inventory#1]" in d.describe()


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("order_fulfillment/*.jsonl")))
def test_a_compatible_version_replays_every_order_history(path: Path) -> None:
    assert replay(variants.ORDER_COMPATIBLE, parse_file(path.read_bytes(), "x").inputs) is None


# ---- from Redis, pure ---------------------------------------------------------------------------

START = {"note": "start: -> started", "outcome": "applied", "state": "started",
         "at": "2026-01-01T00:00:00.000+00:00", "event": "StartOrder", "input": "m0"}  # fmt: skip
HASH = {"type": "order_fulfillment", "state": "started", "version": "1",
        "data": '{"amount":"5"}', "step.reserve_inventory": "running a=1"}  # fmt: skip


def test_a_truncated_history_is_refused() -> None:
    """Capped at 64 entries and the start gone: replay would begin mid-way."""
    later = dict(START, note="completed reserve_inventory#1: started -> pending")
    with pytest.raises(RefusedError, match="truncated: it keeps the last 64 entries"):
        from_redis("o-1", HASH, [later] * HISTORY_CAP, ["reserve_inventory"], "saga o-1")
    with pytest.raises(RefusedError, match="does not begin with its start"):
        from_redis("o-1", HASH, [later], ["reserve_inventory"], "saga o-1")


def test_notes_give_back_the_inputs() -> None:
    """What the history notes say is enough to rebuild each input replay needs."""

    def ev(note: str, input_id: str = "i") -> Any:
        return entry_event({"note": note, "input": input_id}, Start("o-1", "t", {}))

    r = ev("failed compensation process_payment#2 retryable: compensating -> compensating")
    assert (r.kind, r.step, r.attempt, r.compensation, r.retryable) == (
        "failed",
        "process_payment",
        2,
        True,
        True,
    )
    assert r.command_id == "o-1:process_payment:compensation:2"
    stray = ev("completed hotel#1: ignored (stray reply: command id 'forged' is not 'o-1:hotel')")
    assert stray.command_id == "forged"
    t = ev("timeout compensation timer hotel#3: compensating -> compensating")
    assert (t.kind, t.step, t.attempt, t.compensation) == ("timeout", "hotel", 3, True)
    o = ev("operator retry hotel by ada: slow: pending -> pending")
    assert (o.action, o.step, o.operator) == ("retry", "hotel", "ada")
    o = ev("operator abort by ada: pending -> compensating")
    assert (o.action, o.step) == ("abort", None)
    s = ev("signal approve from ada: refused (saga is completed)", "sig-1")
    assert (s.name, s.sender, s.signal_id) == ("approve", "ada", "sig-1")
    with pytest.raises(ValueError, match="names no input"):
        ev("something typed by hand")


# ---- the CLI: hostile input ----------------------------------------------------------------------

#: nothing listens here: a command that got past validation would fail with exit 1, not 2
ENV = {"SAGA_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "SAGA_REDIS_URL": "redis://127.0.0.1:1/0"}
ORDER_DEF = "participants.samples.order.saga:ORDER_FULFILLMENT"
HEAD = b'{"format":"saga-history/1","saga_id":"o-1","saga_type":"order_fulfillment",' \
    b'"definition_version":1}\n'  # fmt: skip


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, ["replay", *args], env=ENV)
    return res.exit_code, res.stdout, res.stderr


def refused(args: list[str], needle: str, code: int = 2) -> None:
    got, _, err = cli(*args)
    assert got == code, (args, got, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert needle in lines[0], err


def test_a_golden_file_replays_from_the_cli() -> None:
    path = GOLDEN / "order_fulfillment" / "retry_then_success.jsonl"
    code, out, err = cli("--definition", ORDER_DEF, "--history", str(path))
    assert code == 0, err
    assert out.splitlines()[-1] == "no divergence (7 inputs)"
    code, out, _ = cli("--definition", ORDER_DEF, "--history", str(path), "--json")
    assert code == 0 and orjson.loads(out)["divergence"] is None


def test_a_divergence_from_the_cli_exits_1_with_the_input() -> None:
    path = GOLDEN / "order_fulfillment" / "payment_declined.jsonl"
    spec = "tests.golden.variants:ORDER_COMPENSATION_RENAMED"
    code, out, _ = cli("--definition", spec, "--history", str(path))
    assert code == 1
    assert "divergence at input 2 of 4: sent inventory/CancelReservation" in out
    code, out, _ = cli("--definition", spec, "--history", str(path), "--json")
    doc = orjson.loads(out)
    assert code == 1 and doc["divergence"]["index"] == 2
    assert doc["divergence"]["input"]["kind"] == "failed"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--definition", ORDER_DEF], "give --history"),
        (["--definition", ORDER_DEF, "--history", "a.jsonl", "--export", "o-1"], "give --history"),
        (["--history", "x/a.jsonl"], "--definition <module>:<NAME> is required"),
        (["--definition", "nosuchmodule:X", "--history", "x/a"], "cannot be imported"),
        (["--definition", "participants.samples.order.saga", "--history", "x/a"], "<module>:"),
        (["--definition", "participants.samples.order.saga:NOPE", "--history", "x/a"],
         "NOPE does not exist"),
        (["--definition", "participants.samples.order.saga:NAME", "--history", "x/a"],
         "NAME is a str"),
        (["--definition", ORDER_DEF, "--history", "/nonexistent/a.jsonl"], "cannot read it"),
        (["--definition", ORDER_DEF, "--history", "/"], "cannot read it"),
        (["--export", "bad id!"], "invalid saga id"),
    ],
)  # fmt: skip
def test_hostile_arguments(args: list[str], needle: str) -> None:
    refused(args, needle)


def test_the_saga_type_name_is_a_definition_too() -> None:
    """NAME may be the saga type in the module's SAGAS (order_fulfillment)."""
    path = GOLDEN / "order_fulfillment" / "completed.jsonl"
    spec = "participants.samples.order.saga:order_fulfillment"
    assert cli("--definition", spec, "--history", str(path))[0] == 0


REPLY = b'"input":{"type":"reply","kind":"completed","step":"s","attempt":1}'


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"not json\n", ":1: invalid JSON"),
        (b"[1,2]\n", ":1: expected a JSON object"),
        (b'{"format":"other"}\n', ":1: not a saga history"),
        (b'{"format":"saga-history/1","saga_id":"o"}\n', "definition_version"),
        (HEAD + b"{oops\n", ":2: invalid JSON"),
        (HEAD + b'{"now_ms":1,"input":{"type":"teleport"},"outcome":"applied"}\n',
         ":2: unknown input type 'teleport' (one of start, reply, timer, operator, signal)"),
        (HEAD + b'{"now_ms":1,"input":{"type":"reply","kind":"completed","step":"s"},'
         b'"outcome":"applied","status":"started"}\n', "reply input needs 'attempt'"),
        (HEAD + b'{"now_ms":1,"input":{"type":"reply","kind":"completed","step":"s",'
         b'"attempt":"1"},"outcome":"applied"}\n', "attempt must be a whole number"),
        (HEAD + b'{"now_ms":1,"input":{"type":"timer","kind":"timeout","step":"s","attempt":1,'
         b'"extra":1},"outcome":"applied"}\n', "timer input has no field 'extra'"),
        (HEAD + b'{"now_ms":-1,' + REPLY + b',"outcome":"applied"}\n', "now_ms must be"),
        (HEAD + b'{"now_ms":1,' + REPLY + b',"outcome":"won"}\n', "outcome must be one of"),
        (HEAD + b'{"now_ms":1,' + REPLY + b',"outcome":"applied","status":"x"}\n',
         "status must be one of"),
        (HEAD + b'{"now_ms":1,' + REPLY + b',"outcome":"applied","status":"started",'
         b'"steps":[1]}\n', "steps must be an object"),
        (HEAD + b'{"now_ms":1,' + REPLY + b',"oops":1}\n', ":2: no field 'oops'"),
        (b"\xff\xfe\n", ":1: invalid JSON"),
    ],
)  # fmt: skip
def test_hostile_golden_files(tmp_path: Path, body: bytes, needle: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(body)
    refused(["--definition", ORDER_DEF, "--history", str(path)], needle)


# ---- against the real orchestrator ---------------------------------------------------------------


async def saga_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.ops.cli", "replay", *args,
        env=orchestrator_env(settings), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@ORDER_TOPICS  # the workers start first: their topics exist, as in a deployment
async def test_replay_of_a_real_saga_from_redis(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """An order run by the real orchestrator and workers, its payment failing once (retryable)
    then succeeding: `saga replay --history <id>` under its own definition finds no divergence;
    under a version with a step inserted, the first input decided differently is the payment's
    failed reply (ignored now: no payment was asked for); `--export` writes a golden file that
    replays clean under the shipped definition (it differs only in timeouts); an unknown saga
    is exit 1; a history whose start is gone is refused."""
    await seed_stock(settings, {"sku-1": 10})
    await faults.fail_next(reader.redis, SdkKeys(settings.key_prefix, "payment"), 1)
    stop = asyncio.Event()
    workers = asyncio.create_task(run_many(settings, build_all(), stop))
    doc = {"sagaId": "real-1", "command": "StartOrder", "customerId": "c", "amount": "9.50",
           "items": [{"productId": "sku-1", "quantity": 1}]}  # fmt: skip
    try:
        async with running(settings):
            await produce(settings, settings.commands_topic, [(b"real-1", orjson.dumps(doc))])
            assert await reader.wait_final(["real-1"], timeout_s=120) == {"real-1": "completed"}
    finally:
        stop.set()
        await asyncio.wait_for(workers, 60)
    notes = [h["note"] for h in await reader.history("real-1")]
    assert any(n.startswith("failed process_payment#1 retryable:") for n in notes), notes

    code, out, err = await saga_cli(
        settings, "--definition", "tests.support.sagas_fast:ORDER_FAST", "--history", "real-1"
    )
    assert code == 0, err
    assert out.splitlines() == [
        f"replaying saga real-1 in Redis (order_fulfillment v1, {len(notes)} inputs) under "
        "order_fulfillment v1",
        f"no divergence ({len(notes)} inputs)",
    ]

    spec = "tests.golden.variants:ORDER_FAST_STEP_INSERTED"
    code, out, err = await saga_cli(settings, "--definition", spec, "--history", "real-1")
    assert code == 1, err
    assert "divergence at input 2 of 7: outcome ignored, recorded applied" in out, out
    assert "(stray reply: attempt 1 was never issued (issued: 0))" in out

    code, out, err = await saga_cli(settings, "--export", "real-1")
    assert code == 0, err
    golden_file = tmp_path / "real-1.jsonl"
    golden_file.write_text(out)
    h = parse_file(out.encode(), "export")
    assert len(h.inputs) == len(notes) and h.inputs[-1].expected.status == "completed"
    assert replay(ORDER_FULFILLMENT, h.inputs) is None
    code, out, err = await saga_cli(
        settings, "--definition", ORDER_DEF, "--history", str(golden_file)
    )
    assert code == 0 and out.endswith(f"no divergence ({len(notes)} inputs)\n"), err

    code, _, err = await saga_cli(settings, "--definition", ORDER_DEF, "--history", "nosuch-1")
    assert code == 1 and "no saga 'nosuch-1' in Redis" in err, err

    await reader.redis.lpop(reader.keys.history("real-1"))  # as the cap drops the oldest
    code, _, err = await saga_cli(settings, "--definition", ORDER_DEF, "--history", "real-1")
    assert code == 1 and "does not begin with its start" in err, err
