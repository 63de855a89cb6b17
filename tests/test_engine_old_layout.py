"""The saga keys' layout across versions and its bounds: a saga written by the previous version
(one hash field per step attribute, a history stream, every input id in the seen set) finishes
under this one and its keys take the new layout; history entries not written by the step read
as notes; the seen set's cap dead-letters rather than forgets."""

from __future__ import annotations

import re

import orjson

from orchestrator.engine import history
from orchestrator.engine.keys import Keys
from orchestrator.engine.statecodec import join_long
from orchestrator.engine.store import SEEN_CAP
from schemas import codec
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, header
from schemas.messages import OperatorCommand, SagaCommand
from tests.support.kafka import produce, read_all, wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import ScriptedParticipant, reply_for

SID = "old-1"
STEPS = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]
T0 = "2026-01-01T10:00:00.000+00:00"


def old_layout_hash() -> dict[str, str]:
    """The hash as the previous version wrote it right after the start."""
    f = {
        "saga_id": SID, "type": "order_fulfillment", "definition_version": "1",
        "state": "started", "current_step": STEPS[0], "current_step_index": "0",
        "version": "1", "created_at": T0, "updated_at": T0, "state_entered_at": T0,
        "correlation_id": SID, "traceparent": "", "last_error": "",
        "data": orjson.dumps({"orderId": SID, "items": [{"productId": "sku-1", "quantity": 1}],
                              "amount": "10.00", "note": "x" * 80}).decode(),
    }  # fmt: skip
    for i, name in enumerate(STEPS):
        p = f"step.{name}."
        f |= {
            p + "status": "running" if i == 0 else "pending", p + "attempts": str(int(i == 0)),
            p + "compensation_attempts": "0", p + "result": "", p + "error": "",
            p + "may_have_run": "no", p + "retry_floors": "0/0",
        }  # fmt: skip
    return f


async def test_a_saga_in_the_old_layout_finishes_and_is_rewritten(
    settings: Settings, reader: SagaReader
) -> None:
    """The reply to its first command moves it on; it completes; the old fields, the stream
    and the old ids go, and a copy of the old start (its id in the old seen set) and of the
    reply (its id in the history) are duplicates that are not even recorded."""
    keys, redis = Keys(settings.key_prefix), reader.redis
    await redis.hset(keys.saga(SID), mapping=old_layout_hash())
    start = {"at": T0, "event": "StartOrder", "outcome": "applied", "state": "started",
             "note": "start: -> started", "input": "old-start-id"}  # fmt: skip
    await redis.xadd(keys.history(SID), start)  # type: ignore[arg-type]
    await redis.sadd(keys.seen(SID), "old-start-id")
    await redis.zadd(keys.index("started"), {SID: 1_767_261_600_000})
    first = SagaCommand(
        message_id=f"{SID}:{STEPS[0]}:action:1", saga_id=SID, saga_type="order_fulfillment",
        participant="inventory", command_type="ReserveItems", step=STEPS[0], attempt=1,
        compensation=False, data={},
    )  # fmt: skip
    reply = reply_for(first, "ok")
    assert reply is not None
    replayed_start = orjson.dumps(
        {"sagaId": SID, "messageId": "old-start-id", "command": "StartOrder",
         "items": [{"productId": "sku-1", "quantity": 1}], "amount": 10}
    )  # fmt: skip

    async with ScriptedParticipant(settings) as p, running(settings) as orch:
        await produce(
            settings, settings.events_topic, [(SID.encode(), codec.encode(reply, "json"))]
        )
        assert (await reader.wait_final([SID]))[SID] == "completed"
        await produce(settings, settings.commands_topic, [(SID.encode(), replayed_start)])
        await produce(
            settings, settings.events_topic, [(SID.encode(), codec.encode(reply, "json"))]
        )

        async def both_taken() -> bool:
            # the reply again: a duplicate by the state, and its id is in the history (carried
            # over from the stream): counted, not recorded; the start again: a duplicate
            return orch.metrics.duplicates == 2

        await wait_for(both_taken, 60, "the copies of the reply and of the start to be taken")

    assert [c.command_type for c in p.by_saga[SID]] == [
        "ProcessPayment", "CreateShipment", "SendOrderConfirmation",
    ]  # fmt: skip
    raw = await redis.hgetall(keys.saga(SID))
    assert not any(k.endswith((".status", ".attempts")) or k == "saga_id" for k in raw), raw
    # completed by the reply above: its time (ms after the old created_at) is stamped on it
    assert re.match(r"completed a=1 @[0-9]+ \{", raw[f"step.{STEPS[0]}"])
    assert orjson.loads(join_long(raw)["data"])["note"] == "x" * 80 and "data~2" in raw
    assert await redis.type(keys.history(SID)) == "list"
    entries = await history.read(redis, keys.history(SID))
    assert entries[0] == start  # the stream's entry, carried over
    assert [h["outcome"] for h in entries] == ["applied"] * 5
    assert (await reader.fields(SID))["version"] == "5"


def test_history_entries_read_back_and_foreign_ones_show_as_their_note() -> None:
    """An entry round-trips; one not written by the step (by hand, not JSON, not texts, short)
    reads as a note instead of failing `saga status`."""
    line = history.encode("t", "StepCompleted", "applied", "pending", "note ✓", "in-1")
    assert history.decode(line.encode()) == dict(
        zip(
            history.FIELDS,
            ["t", "StepCompleted", "applied", "pending", "note ✓", "in-1"],
            strict=True,
        )
    )
    assert history.decode(b"\xff not json")["note"] == "\ufffd not json"
    assert history.decode('["t", 1]')["note"] == '["t", 1]'
    assert history.decode('["t","E"]') == dict.fromkeys(history.FIELDS, "") | {
        "at": "t",
        "event": "E",
    }


async def test_an_operator_command_past_the_seen_cap_is_dead_lettered(
    settings: Settings, reader: SagaReader
) -> None:
    """A saga remembers at most SEEN_CAP operator command ids; one more is dead-lettered with
    the reason (never applied with an old id forgotten), and the saga is unchanged."""
    sid = "capped-1"
    keys = Keys(settings.key_prefix)
    start = orjson.dumps(
        {"sagaId": sid, "command": "StartOrder", "items": [{"productId": "s", "quantity": 1}],
         "amount": 1}
    )  # fmt: skip
    retry = OperatorCommand(saga_id=sid, action="retry", operator="t", reason="again")
    async with ScriptedParticipant(settings, lambda cmd: "silent"), running(settings):
        await produce(settings, settings.commands_topic, [(sid.encode(), start)])

        async def started() -> bool:
            return (await reader.fields(sid)).get("version") == "1"

        await wait_for(started, 60, "the saga to start")
        await reader.redis.sadd(keys.seen(sid), *(f"op-{i}" for i in range(SEEN_CAP)))
        await produce(settings, settings.events_topic, [(sid.encode(), codec.encode(retry))])
        letters = await read_all(settings, settings.dlq_topic, 1, timeout_s=60)
    assert len(letters) == 1
    assert header(letters[0].headers, H_ERROR_CLASS) == "too_many_operator_commands"
    assert f"remembers {SEEN_CAP} operator commands" in (
        header(letters[0].headers, "dlq-error-message") or ""
    )
    assert (await reader.fields(sid))["version"] == "1"
    assert await reader.redis.scard(keys.seen(sid)) == SEEN_CAP
