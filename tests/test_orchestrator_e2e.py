"""The orchestrator end to end on the real Kafka and Redis, with a scripted participant."""

from __future__ import annotations

import orjson
import pytest

from orchestrator.core.definition import Registry
from schemas import codec
from schemas.config import Settings
from schemas.messages import SagaCommand
from tests.conftest import BOTH_COMMAND_TOPICS, BOTH_REDIS
from tests.support.kafka import produce, wait_for
from tests.support.offsets import wait_committed_to_end
from tests.support.orch import SagaReader, running
from tests.support.sagas_patient import ORDER_PATIENT
from tests.support.scripted import Answer, ScriptedParticipant, reply_for

pytestmark = BOTH_REDIS  # on the single Redis and on the Redis Cluster
# the suite runs per-participant command topics; BOTH_COMMAND_TOPICS runs a few of these tests
# on the one commands topic too, so that mode stays covered end to end

STEPS = ["reserve_inventory", "process_payment", "create_shipment", "send_confirmation"]
ACTIONS = ["ReserveItems", "ProcessPayment", "CreateShipment", "SendOrderConfirmation"]
COMPENSATIONS = ["ReleaseReservation", "RefundPayment", "CancelShipment", "SendCancellationNotice"]


def start_order(saga_id: str, **extra: object) -> bytes:
    doc = {
        "sagaId": saga_id,
        "command": "StartOrder",
        "customerId": "cust-1",
        "items": [{"productId": "sku-1", "quantity": 2}],
        "amount": 42.5,
        **extra,
    }
    return orjson.dumps(doc)


def kinds(cmds: list[SagaCommand]) -> list[str]:
    return [c.command_type for c in cmds]


@BOTH_COMMAND_TOPICS
async def test_happy_path_completes(settings: Settings, reader: SagaReader) -> None:
    """A StartOrder runs the four steps in order and ends completed, readable in Redis."""
    async with ScriptedParticipant(settings) as p, running(settings):
        await produce(settings, settings.commands_topic, [(b"happy-1", start_order("happy-1"))])
        assert (await reader.wait_final(["happy-1"]))["happy-1"] == "completed"
    assert kinds(p.by_saga["happy-1"]) == ACTIONS
    fields = await reader.fields("happy-1")
    assert fields["type"] == "order_fulfillment"
    assert fields["version"] == "5"
    assert all(fields[f"step.{s}.status"] == "completed" for s in STEPS)
    assert orjson.loads(fields["data"])["items"] == [{"productId": "sku-1", "quantity": 2}]
    history = await reader.history("happy-1")
    assert [h["state"] for h in history] == [
        "started",
        "pending",
        "pending",
        "pending",
        "completed",
    ]
    score = await reader.redis.zscore(
        reader.keys.index("completed", reader.keys.shard_of("happy-1")), "happy-1"
    )
    assert score is not None


@pytest.mark.parametrize("failing", range(4), ids=STEPS)
async def test_non_retryable_failure_compensates_finished_steps_in_reverse(
    settings: Settings, reader: SagaReader, failing: int
) -> None:
    """A non-retryable failure at step N compensates exactly steps N-1..0, then the saga fails."""

    def behaviour(cmd: SagaCommand) -> Answer:
        return "fail" if cmd.step == STEPS[failing] and not cmd.compensation else "ok"

    sid = f"fail-{failing}"
    async with ScriptedParticipant(settings, behaviour) as p, running(settings):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])
        assert (await reader.wait_final([sid]))[sid] == "failed"
    expected = ACTIONS[: failing + 1] + list(reversed(COMPENSATIONS[:failing]))
    assert kinds(p.by_saga[sid]) == expected
    fields = await reader.fields(sid)
    assert fields[f"step.{STEPS[failing]}.status"] == "failed"
    assert "scripted fail" in fields["last_error"]


@BOTH_COMMAND_TOPICS
async def test_retryable_failure_is_retried_then_succeeds(
    settings: Settings, reader: SagaReader
) -> None:
    """A retryable failure is retried after a backoff and the saga then completes."""
    failures = {"n": 0}

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.step == "process_payment" and failures["n"] < 2:
            failures["n"] += 1
            return "retry"
        return "ok"

    async with ScriptedParticipant(settings, behaviour) as p, running(settings):
        await produce(settings, settings.commands_topic, [(b"retry-1", start_order("retry-1"))])
        assert (await reader.wait_final(["retry-1"]))["retry-1"] == "completed"
    payments = [c for c in p.by_saga["retry-1"] if c.step == "process_payment"]
    assert [c.attempt for c in payments] == [1, 2, 3]
    assert len({c.message_id for c in payments}) == 3
    assert (await reader.fields("retry-1"))["step.process_payment.attempts"] == "3"


@BOTH_COMMAND_TOPICS
async def test_silent_step_times_out_is_retried_then_compensated(
    settings: Settings, reader: SagaReader
) -> None:
    """A step that never answers times out, is retried per policy, then compensated too."""

    def behaviour(cmd: SagaCommand) -> Answer:
        return "silent" if cmd.step == "create_shipment" and not cmd.compensation else "ok"

    async with ScriptedParticipant(settings, behaviour) as p, running(settings):
        await produce(settings, settings.commands_topic, [(b"silent-1", start_order("silent-1"))])
        assert (await reader.wait_final(["silent-1"], timeout_s=90))["silent-1"] == "failed"
    cmds = kinds(p.by_saga["silent-1"])
    assert cmds == [
        "ReserveItems",
        "ProcessPayment",
        "CreateShipment",
        "CreateShipment",
        "CreateShipment",
        "CancelShipment",
        "RefundPayment",
        "ReleaseReservation",
    ]
    fields = await reader.fields("silent-1")
    assert fields["step.create_shipment.status"] == "compensated"
    assert (
        "timed out" in fields["step.create_shipment.error"] or "timed out" in fields["last_error"]
    )


async def test_compensation_that_keeps_failing_needs_intervention(
    settings: Settings, reader: SagaReader
) -> None:
    """A compensation that fails on every retry leaves the saga in needs_intervention."""

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.step == "create_shipment" and not cmd.compensation:
            return "fail"
        if cmd.step == "process_payment" and cmd.compensation:
            return "retry"
        return "ok"

    async with ScriptedParticipant(settings, behaviour) as p, running(settings):
        await produce(settings, settings.commands_topic, [(b"stuck-1", start_order("stuck-1"))])
        assert (await reader.wait_final(["stuck-1"]))["stuck-1"] == "needs_intervention"
    refunds = [c for c in p.by_saga["stuck-1"] if c.command_type == "RefundPayment"]
    assert [c.attempt for c in refunds] == [1, 2, 3]
    assert "ReleaseReservation" not in kinds(p.by_saga["stuck-1"])
    fields = await reader.fields("stuck-1")
    assert fields["step.process_payment.status"] == "compensation_failed"
    assert (
        await reader.redis.zscore(
            reader.keys.index("needs_intervention", reader.keys.shard_of("stuck-1")), "stuck-1"
        )
        is not None
    )


@BOTH_COMMAND_TOPICS
async def test_every_input_and_command_twice_changes_nothing(
    settings: Settings, reader: SagaReader
) -> None:
    """Starts, replies and commands delivered twice leave the same final states and effects."""
    ids = [f"dup-{i}" for i in range(20)]

    def behaviour(cmd: SagaCommand) -> Answer:
        n = int(cmd.saga_id.split("-")[1])
        if n % 2 and cmd.step == "process_payment" and not cmd.compensation:
            return "fail"
        return "twice"

    records = [(sid.encode(), start_order(sid)) for sid in ids]
    topics = [settings.commands_topic, settings.events_topic]
    async with ScriptedParticipant(settings, behaviour) as p, running(settings) as orch:
        await produce(settings, settings.commands_topic, records + records)
        await reader.wait_final(ids)
        # Every start once more after the sagas finished: still nothing changes. Counted only
        # once the daemon committed everything (it has then read the late starts too).
        await produce(settings, settings.commands_topic, records)
        await wait_committed_to_end(settings, orch.s.group, topics, timeout_s=60)
        assert orch.metrics.duplicate_starts == 2 * len(ids)
    states = await reader.wait_final(ids)
    for sid in ids:
        assert states[sid] == ("failed" if int(sid.split("-")[1]) % 2 else "completed")
    for sid in ids:
        cmds = kinds(p.by_saga[sid])
        if int(sid.split("-")[1]) % 2:
            assert cmds == ["ReserveItems", "ProcessPayment", "ReleaseReservation"]
        else:
            assert cmds == ACTIONS
        fields = await reader.fields(sid)
        assert fields["version"] == ("4" if int(sid.split("-")[1]) % 2 else "5")


async def test_forged_replies_change_nothing(settings: Settings, reader: SagaReader) -> None:
    """Replies on saga-events that answer no issued command (wrong command id, an attempt never
    sent, another saga's command) are recorded as ignored and counted; the saga does not move.
    The genuine reply then applies."""
    sid = "forged-1"

    def behaviour(cmd: SagaCommand) -> Answer:
        return "silent" if cmd.step == "process_payment" and not cmd.compensation else "ok"

    async with (
        ScriptedParticipant(settings, behaviour) as p,
        running(settings, Registry([ORDER_PATIENT])) as orch,
    ):
        await produce(settings, settings.commands_topic, [(sid.encode(), start_order(sid))])

        async def payment_running() -> bool:
            running_now = (await reader.fields(sid)).get("step.process_payment.status")
            received = any(c.step == "process_payment" for c in p.by_saga[sid])
            return running_now == "running" and received

        await wait_for(payment_running, 60, "the payment command to reach the participant")
        before = await reader.fields(sid)
        [issued] = [c for c in p.by_saga[sid] if c.step == "process_payment"]
        ok = reply_for(issued, "ok")
        again = issued.model_copy(
            update={"attempt": 2, "message_id": f"{sid}:{issued.step}:action:2"}
        )
        elsewhere = issued.model_copy(update={"message_id": f"other:{issued.step}:action:1"})
        assert ok is not None
        forged = [
            ok.model_copy(update={"command_id": "made-up"}),  # the genuine reply's message id, too
            reply_for(again, "ok"),
            reply_for(elsewhere, "ok"),
        ]
        records = [(sid.encode(), codec.encode(m)) for m in forged if m is not None]
        await produce(settings, settings.events_topic, records)

        async def all_recorded() -> bool:
            stray = [h for h in await reader.history(sid) if "stray reply" in h["note"]]
            return len(stray) == 3

        await wait_for(all_recorded, 60, "the three forged replies to be recorded as ignored")
        after = await reader.fields(sid)
        assert after == before, "a forged reply changed the saga"

        # the step records the history before the daemon counts, so wait on the counter too
        async def counted() -> bool:
            return orch.metrics.stray_replies == 3

        await wait_for(counted, 30, "saga_replies_stray_total to count the three")
        genuine = reply_for(issued, "ok")
        assert genuine is not None
        await produce(settings, settings.events_topic, [(sid.encode(), codec.encode(genuine))])
        assert (await reader.wait_final([sid]))[sid] == "completed"


async def test_sagas_land_on_the_partition_shards_and_every_shard_is_read(
    settings: Settings, reader: SagaReader
) -> None:
    """Sagas whose ids hash to every partition complete; each one's keys are in the shard of
    the partition its records took, `saga list` (SagaQuery) finds them all across shards, and
    on the cluster their hashes sit on at least two masters."""
    from orchestrator.engine.keys import partition_of
    from orchestrator.ops.query import SagaQuery

    ids = [f"spread-{i}" for i in range(12)]
    shards = {partition_of(sid, settings.topic_partitions) for sid in ids}
    assert shards == set(range(settings.topic_partitions)), shards  # the ids cover them all
    async with ScriptedParticipant(settings), running(settings):
        await produce(
            settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids]
        )
        states = await reader.wait_final(ids)
    assert set(states.values()) == {"completed"}
    found = await SagaQuery(reader.redis, reader.keys).find(["completed"], limit=100)
    assert sorted(s.saga_id for s in found) == sorted(ids)
    counts = await SagaQuery(reader.redis, reader.keys).counts_by_state()
    assert counts["completed"] == len(ids)
    if settings.redis_cluster:
        for sid in ids:
            assert (
                reader.keys.saga(sid)
                == f"{settings.key_prefix}:{{p{reader.keys.shard_of(sid)}}}:{sid}"
            )
        nodes = {reader.redis.get_node_from_key(reader.keys.saga(sid)).name for sid in ids}  # type: ignore[attr-defined]
        assert len(nodes) >= 2, nodes
    else:
        assert reader.keys.saga(ids[0]) == f"{settings.key_prefix}:{ids[0]}"
