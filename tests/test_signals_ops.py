"""Signals from the operator surfaces, without a daemon: `saga signal` and
`POST /api/sagas/{id}/signals/{name}` against saga hashes the core itself produced (a trip
waiting for its approval, a trip that completed), on the real Redis and Kafka. What must be
sent is one `Signal` on the events topic; what must be refused is refused with a clear reason
and the right exit code or HTTP status, and nothing is sent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from typer.testing import CliRunner

from orchestrator.core.decide import decide
from orchestrator.core.definition import Registry
from orchestrator.core.model import Reply, SagaState, Start, command_id
from orchestrator.engine.keys import Keys
from orchestrator.engine.sagas import SagaModules
from orchestrator.engine.statecodec import to_fields
from orchestrator.ops.cli import app
from participants.samples.trip.config import TripConfig
from participants.samples.trip.saga import trip_booking
from schemas import codec
from schemas.config import Settings
from schemas.messages import MAX_SIGNAL_DATA_BYTES, Signal
from tests.support.kafka import read_all
from tests.test_http import api_alone
from tests.test_http_auth import OPERATE, READ, TOKENS

TRIP = trip_booking(TripConfig())
REGISTRY = Registry([TRIP])
BOOKINGS = ("book_flight", "book_hotel", "book_car")


def trip_state(saga_id: str, amount: int, booked: tuple[str, ...] = BOOKINGS) -> SagaState:
    """A trip as the core leaves it after its start and the given bookings' replies."""
    t = decide(
        None, Start(saga_id, TRIP.name, {"customerId": "c-1", "amount": amount}), 1, REGISTRY
    )
    assert t.state is not None
    for step in booked:
        cid = command_id(saga_id, step, False, 1)
        t = decide(t.state, Reply("completed", step, 1, command_id=cid), 2, REGISTRY)
        assert t.state is not None and t.outcome == "applied", t.note
    return t.state


def store(settings: Settings, *states: SagaState) -> None:
    """Write the sagas' hashes as the engine would (the fields `to_fields` gives)."""
    r = redis.Redis.from_url(settings.redis_url)
    try:
        for st in states:
            r.hset(Keys(settings.key_prefix).saga(st.saga_id), mapping=to_fields(st, TRIP))
    finally:
        r.close()


@pytest.fixture
def trips(settings: Settings) -> Settings:
    """`waiting` (amount 5000, all booked: its approval waits), `booking` (5000, only the
    flight booked), `small` (200: approval skipped, payment running)."""
    store(
        settings,
        trip_state("waiting", 5000),
        trip_state("booking", 5000, ("book_flight",)),
        trip_state("small", 200),
    )
    return settings


def cli(
    settings: Settings, *args: str, modules: str = '["participants.samples.trip.saga"]'
) -> tuple[int, str, str]:
    """`saga <args>` in this process (the command runs its own event loop)."""
    env = {
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SAGA_REDIS_URL": settings.redis_url,
        "SAGA_EVENTS_TOPIC": settings.events_topic,
        "SAGA_COMMANDS_TOPIC": settings.commands_topic,
        "SAGA_KEY_PREFIX": settings.key_prefix,
        "SAGA_SAGA_MODULES": modules,
    }
    res = CliRunner().invoke(app, list(args), env=env)
    return res.exit_code, res.stdout, res.stderr


async def acli(settings: Settings, *args: str, modules: str = "") -> tuple[int, str, str]:
    """`cli` from an async test: in a thread, since the command runs `asyncio.run`."""
    if modules:
        return await asyncio.to_thread(cli, settings, *args, modules=modules)
    return await asyncio.to_thread(cli, settings, *args)


def one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err


async def sent(settings: Settings, expect: int = 1) -> list[Signal]:
    records = await read_all(settings, settings.events_topic, expect, timeout_s=30)
    msgs = [codec.decode(r.value) for r in records]
    assert all(isinstance(m, Signal) for m in msgs)
    return [m for m in msgs if isinstance(m, Signal)]


async def nothing_sent(settings: Settings) -> None:
    assert await read_all(settings, settings.events_topic, 1, timeout_s=2) == []


# ---------------------------------------------------------------------------------- the wire


def _wire(**fields: Any) -> bytes:
    return orjson.dumps({"sagaId": "trip-1", "messageType": "Signal", "name": "approve"} | fields)


def test_a_signal_as_a_person_types_it() -> None:
    """`{"sagaId", "messageType": "Signal", "name"}` is enough: no data, no sender, a generated
    message id (the daemon then dedupes by header or log position); `command` works too."""
    msg = codec.decode(_wire())
    assert isinstance(msg, Signal)
    assert (msg.name, msg.data, msg.sender) == ("approve", {}, "")
    assert "message_id" not in msg.model_fields_set
    typed = codec.decode(b'{"sagaId":"t","command":"Signal","name":"reject","data":{"a":[1]}}')
    assert isinstance(typed, Signal) and typed.data == {"a": [1]}


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"name": "ap prove"}, "invalid name"),
        ({"name": ""}, "invalid name"),
        ({"name": "a" * 65}, "invalid name"),
        ({"name": "x\u0000"}, "invalid name"),
        ({"name": 7}, "invalid name"),
        ({"data": [1, 2]}, "invalid data"),
        ({"data": "yes"}, "invalid data"),
        ({"data": {"k" * 65: 1}}, "invalid data"),
        ({"data": {"big": "x" * MAX_SIGNAL_DATA_BYTES}}, "over the limit of 16384"),
        ({"sender": "s" * 257}, "invalid sender"),
        ({"reason": "not a field"}, "invalid reason"),
        ({"sagaId": "a b"}, "invalid sagaId"),
    ],
)
def test_hostile_signal_records_are_refused_by_the_codec(
    fields: dict[str, Any], needle: str
) -> None:
    """What the daemon dead-letters (kind `invalid`) instead of deciding on."""
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(_wire(**fields))
    assert err.value.kind == "invalid"
    assert needle in err.value.reason, err.value.reason


# ---------------------------------------------------------------------------------- the CLI


async def test_cli_sends_one_signal_with_data_reason_and_sender(trips: Settings) -> None:
    """`saga signal waiting approve --data ... --reason ...`: one Signal keyed by the saga id,
    the reason kept in its data, the operator as its sender; `saga status` names the signals
    the waiting step takes and the skipped approval's condition."""
    code, out, err = await acli(
        trips,
        "signal",
        "waiting",
        "approve",
        "--data",
        '{"approver": "alice", "limit": 6000}',
        "--reason",
        "budget ok",
        "--operator",
        "alice",
    )
    assert code == 0, err
    assert out.startswith("sent signal approve to waiting (message id ")
    [msg] = await sent(trips)
    assert (msg.saga_id, msg.name, msg.sender, msg.saga_type) == (
        "waiting",
        "approve",
        "alice",
        "trip_booking",
    )
    assert msg.data == {"approver": "alice", "limit": 6000, "reason": "budget ok"}
    assert msg.message_id in out

    code, out, err = await acli(trips, "status", "waiting")
    assert code == 0, err
    assert "waits for 'approve' or 'reject'" in out
    assert "parallel book" in out
    code, out, err = await acli(trips, "status", "small", "--json")
    assert code == 0, err
    notes = {s["name"]: s["note"] for s in orjson.loads(out)["steps"]}
    assert notes["approval"] == "signal 'approve'; skipped: not amount > 1000"
    assert notes["take_payment"] == ""


async def test_cli_refuses_a_signal_the_saga_does_not_wait_for(trips: Settings) -> None:
    """Not waiting (still booking, approval skipped, a wrong name) or unknown: one line with
    the reason the daemon would record, exit 1, nothing sent; --force sends it anyway."""
    cases = [
        (["booking", "approve"], "step approval is pending, not waiting yet"),
        (["small", "approve"], "step approval was skipped: not amount > 1000"),
        (["waiting", "aprove"], "step approval waits for 'approve' or 'reject', not 'aprove'"),
    ]
    for args, reason in cases:
        code, _, err = await acli(trips, "signal", *args)
        assert code == 1, (args, err)
        one_line_error(err, f"saga {args[0]} is not waiting for signal {args[1]!r}: {reason}")
    code, _, err = await acli(trips, "signal", "nobody", "approve")
    assert code == 1
    one_line_error(err, "no saga 'nobody'")
    await nothing_sent(trips)

    code, out, err = await acli(trips, "signal", "small", "approve", "--force", "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["forced"] is True and "skipped" in doc["refusedBeforeSending"]
    [msg] = await sent(trips)
    assert (msg.saga_id, msg.name, msg.message_id) == ("small", "approve", doc["messageId"])


async def test_cli_without_the_sagas_definition_checks_the_hash(trips: Settings) -> None:
    """A CLI whose saga modules lack the trip type cannot check the name: it refuses a saga
    with no waiting step, and sends to one with a waiting step (the daemon decides)."""
    order_only = '["participants.samples.order.saga"]'
    code, _, err = await acli(trips, "signal", "booking", "approve", modules=order_only)
    assert code == 1
    one_line_error(err, "saga booking is not waiting for signal 'approve': no step is waiting")
    code, _, err = await acli(trips, "signal", "waiting", "aprove", modules=order_only)
    assert code == 0, err
    [msg] = await sent(trips)
    assert (msg.saga_id, msg.name) == ("waiting", "aprove")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["waiting", "ap prove"], "invalid signal name"),
        (["waiting", "a" * 65], "invalid signal name"),
        (["waiting", "appr{ove}"], "invalid signal name"),
        (["waiting", ""], "invalid signal name"),
        (["waiting", "approve", "--data", "[1, 2]"], "must be a JSON object, not an array"),
        (["waiting", "approve", "--data", '"yes"'], "must be a JSON object, not a string"),
        (["waiting", "approve", "--data", "null"], "must be a JSON object, not null"),
        (["waiting", "approve", "--data", "{bad json"], "--data: invalid JSON"),
        (["waiting", "approve", "--data", '{"a": NaN}'], "--data: invalid JSON"),
        (["waiting", "approve", "--data", '{"reason": "a"}', "--reason", "b"], "reason once"),
        (["waiting", "approve", "--data", '{"' + "k" * 65 + '": 1}'], "longer than 64"),
        (["waiting", "approve", "--reason", "r" * 4097], "longer than 4096"),
        (["has space", "approve"], "invalid saga id"),
    ],
)
def test_cli_hostile_input(settings: Settings, args: list[str], needle: str) -> None:
    """Bad names, data that is not a JSON object, bad saga ids: one line, exit 2."""
    code, _, err = cli(settings, "signal", *args)
    assert code == 2, (args, err)
    one_line_error(err, needle)


def test_cli_oversized_data(settings: Settings) -> None:
    """Data over the signal limit is refused (exit 2) whether it is long text or long JSON."""
    big = orjson.dumps({"note": "x" * MAX_SIGNAL_DATA_BYTES}).decode()
    huge = "{" + " " * (5 * MAX_SIGNAL_DATA_BYTES) + "}"
    for text in (big, huge):
        code, _, err = cli(settings, "signal", "waiting", "approve", "--data", text)
        assert code == 2, err
        one_line_error(err, f"at most {MAX_SIGNAL_DATA_BYTES}")


# ---------------------------------------------------------------------------------- HTTP


async def test_http_signal_statuses(trips: Settings, tmp_path: Path) -> None:
    """202 with a status link (the token's name as sender); 409 with the reason when the saga
    does not wait for it; 404 for an unknown saga; 403 for a read token; 400 and 413 for
    hostile bodies and names. Only the 202 sent anything."""
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    sagas = SagaModules(registry=REGISTRY)
    path = "/api/sagas/waiting/signals/approve"
    async with api_alone(trips, sagas, http_tokens_file=str(tokens)) as http:
        read = await http.post(path, json={"reason": "x"}, headers=READ)
        refused = await http.post("/api/sagas/booking/signals/approve", headers=OPERATE)
        skipped = await http.post("/api/sagas/small/signals/approve", headers=OPERATE)
        unknown = await http.post("/api/sagas/nobody/signals/approve", headers=OPERATE)
        bad: list[tuple[Any, int, str]] = [
            (await http.post(f"/api/sagas/waiting/signals/{'a' * 65}", headers=OPERATE), 400,
             "invalid signal name"),
            (await http.post("/api/sagas/waiting/signals/a%20b", headers=OPERATE), 400,
             "invalid signal name"),
            (await http.post("/api/sagas/a%20b/signals/approve", headers=OPERATE), 400,
             "invalid saga id"),
            (await http.post(path, json={"data": [1]}, headers=OPERATE), 400,
             "must be a JSON object, not an array"),
            (await http.post(path, json=[1], headers=OPERATE), 400, "expected a JSON object"),
            (await http.post(path, json={"data": {}, "date": 1}, headers=OPERATE), 400,
             "unknown field(s) date"),
            (await http.post(path, json={"reason": 5}, headers=OPERATE), 400, "strings"),
            (await http.post(path, json={"force": "yes"}, headers=OPERATE), 400,
             "true or false"),
            (await http.post(path, content=b"{nope", headers=OPERATE | {
                "Content-Type": "application/json"}), 400, "invalid JSON"),
            (await http.post(path, content=b"{}", headers=OPERATE | {
                "Content-Type": "text/plain"}), 415, "application/json"),
            (await http.post(path, json={"data": {"n": "x" * MAX_SIGNAL_DATA_BYTES}},
                             headers=OPERATE), 413, f"at most {MAX_SIGNAL_DATA_BYTES}"),
            (await http.post(path, content=b"{" + b" " * 1_100_000 + b"}", headers=OPERATE | {
                "Content-Type": "application/json"}), 413, ""),
        ]  # fmt: skip
        await nothing_sent(trips)
        ok = await http.post(
            path, json={"data": {"approver": "bob"}, "reason": "fine"}, headers=OPERATE
        )
    assert read.status_code == 403, read.text
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == (
        "saga booking is not waiting for signal 'approve': step approval is pending, not "
        "waiting yet"
    )
    assert skipped.status_code == 409 and "skipped: not amount > 1000" in skipped.text
    assert unknown.status_code == 404 and "no saga 'nobody'" in unknown.json()["error"]
    for response, status, needle in bad:
        assert response.status_code == status, (status, needle, response.text[:300])
        assert needle in response.json()["error"], response.text[:300]
    assert ok.status_code == 202, ok.text
    doc = ok.json()
    assert doc["status"] == "/api/sagas/waiting" == ok.headers["Location"]
    [msg] = await sent(trips)
    assert (msg.saga_id, msg.name, msg.sender, msg.message_id) == (
        "waiting",
        "approve",
        "ops-alice",
        doc["messageId"],
    )
    assert msg.data == {"approver": "bob", "reason": "fine"}


async def test_http_force_sends_a_refused_signal(trips: Settings) -> None:
    """Without tokens (loopback) the sender is the body's operator; `"force": true` sends a
    signal the saga would refuse, and says why it would."""
    async with api_alone(trips, SagaModules(registry=REGISTRY)) as http:
        r = await http.post(
            "/api/sagas/small/signals/approve", json={"force": True, "operator": "carol"}
        )
    assert r.status_code == 202, r.text
    assert "skipped" in r.json()["refused"]
    [msg] = await sent(trips)
    assert (msg.saga_id, msg.sender) == ("small", "carol")
