"""Per-participant command topics with the real Kafka and Redis: each command is read once, by
the one participant it is for; the orchestrator never fetches a command it sent; a step's own
topic; the relay re-publishes to the original topic; the orchestrator creates the topics at
start; and the switch from the single commands topic loses no command.

The counts are of what the consumers FETCHED (`Worker.fetched`, the records handed to
`Orchestrator.handle`), not of what they processed: skipping a record cheaply is still reading
it. Each test runs the same scenario in single mode too, where the same counters do see the
other participants' commands, so a counter that saw nothing could not pass."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra import kafka
from infra import redis as redis_factory
from orchestrator.core.definition import Registry, SagaDefinition, StepDef
from orchestrator.engine import topics
from orchestrator.engine.daemon import Orchestrator
from orchestrator.engine.keys import Keys
from orchestrator.errors import ConfigError
from participants import testing
from participants.context import Context
from participants.participant import Participant
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS as DLQ_CLASS
from schemas.dlq import H_SOURCE as DLQ_SOURCE
from schemas.dlq import H_TOPIC as DLQ_TOPIC
from schemas.dlq import header
from schemas.headers import H_MESSAGE_TYPE
from schemas.messages import SagaCommand
from tests.conftest import BOTH_REDIS
from tests.support.kafka import produce, read_all, wait_for
from tests.support.orch import SagaReader, running
from tests.support.procs import ROOT, orchestrator_env, stop

#: long enough that no step times out during a test: every command counted is attempt 1
SLOW = 300.0


def definition(topic: str = "") -> SagaDefinition:
    return SagaDefinition(
        "two_step",
        1,
        (
            StepDef("a", "alpha", "DoA", "UndoA", timeout_s=SLOW, topic=topic),
            StepDef("b", "beta", "DoB", "UndoB", timeout_s=SLOW),
        ),
    )


def participant(name: str, action: str, compensation: str) -> Participant:
    p = Participant(name)

    @p.action(action)
    async def act(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        return {"by": name}

    @p.compensation(compensation)
    async def undo(cmd: SagaCommand, ctx: Context) -> None:
        return None

    return p


ALPHA = participant("alpha", "DoA", "UndoA")
BETA = participant("beta", "DoB", "UndoB")


def in_mode(settings: Settings, mode: str, **more: Any) -> Settings:
    return settings.model_copy(update={"command_topics": mode, **more})


@pytest.fixture
def made(settings: Settings) -> Iterator[list[str]]:
    """Topics a test creates beyond the fixture's three; deleted after it."""
    names: list[str] = []
    yield names
    kafka.delete_topics(settings, names)


def make_topics(settings: Settings, made: list[str], own: str = "") -> Settings:
    """The per-participant settings of this test, with the participants' topics (and the
    step's `own` one) created as the orchestrator creates them (`topics.ensure`)."""
    per = in_mode(settings, "per-participant")
    names = topics.participant_topics(per, [definition(), definition(own)])
    made.extend(names)
    topics.ensure(per, names)
    return per


async def start(settings: Settings, *saga_ids: str) -> None:
    records = [
        (
            sid.encode(),
            orjson.dumps(
                {"sagaId": sid, "command": "StartSaga", "sagaType": "two_step", "data": {}}
            ),
        )
        for sid in saga_ids
    ]
    await produce(settings, settings.commands_topic, records)


class Spy:
    """Every record the orchestrator's consumer handed to the loop: (topic, message type)."""

    def __init__(self, orch: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, str | None]] = []
        real = orch.handle

        async def handle(records: list[Any]) -> None:
            self.seen.extend((r.topic, header(r.headers, H_MESSAGE_TYPE)) for r in records)
            await real(records)

        monkeypatch.setattr(orch, "handle", handle)

    def commands(self) -> int:
        return sum(1 for _, kind in self.seen if kind == "SagaCommand")


@pytest.mark.parametrize("mode", ["per-participant", "single"])
async def test_a_worker_fetches_only_its_own_commands(
    settings: Settings, made: list[str], mode: str
) -> None:
    """Per-participant: alpha's consumer fetches alpha's 3 commands and nothing else (not the
    other's, not the start on the commands topic), beta's its 2. Single (the control): each
    fetches all 6 records and skips the other's commands and the start."""
    s = in_mode(make_topics(settings, made), mode)
    cmds = [testing.command(f"w-{i}", "alpha", "DoA", "a") for i in range(3)]
    cmds += [testing.command(f"w-{i}", "beta", "DoB", "b") for i in range(3, 5)]
    await start(s, "w-9")  # a start, as people type it (no headers): not a worker's business
    await testing.produce(s, cmds)
    async with (
        testing.running(s, ALPHA) as alpha,
        testing.running(s, BETA) as beta,
        testing.TopicReader(s, s.events_topic) as replies,
    ):
        await replies.replies([c.message_id for c in cmds], timeout_s=60)
        if mode == "single":
            await wait_for(
                _fetched(alpha, beta, 6), 30, "both workers to fetch the whole commands topic"
            )
            assert dict(alpha.worker.fetched) == {s.commands_topic: 6}
            assert dict(beta.worker.fetched) == {s.commands_topic: 6}
            assert alpha.stats.skipped == 3 and beta.stats.skipped == 4
        else:
            assert dict(alpha.worker.fetched) == {f"{s.commands_topic}.alpha": 3}
            assert dict(beta.worker.fetched) == {f"{s.commands_topic}.beta": 2}
            assert alpha.stats.skipped == beta.stats.skipped == 0


async def test_hostile_records_on_a_workers_own_topic_are_dead_lettered(
    settings: Settings, made: list[str]
) -> None:
    """Nobody else reads alpha's own topic, so alpha dead-letters what does not belong there
    (source participant:alpha, the reason in the headers) and still runs its real command:
    bytes that are not a message, a start typed there by mistake, beta's command."""
    per = make_topics(settings, made)
    own = f"{per.commands_topic}.alpha"
    good = testing.command("h-1", "alpha", "DoA", "a")
    beta = testing.command("h-2", "beta", "DoB", "b")
    start_doc = {"sagaId": "h-3", "command": "StartSaga", "sagaType": "two_step", "data": {}}
    hostile = [
        testing.Raw(b"{not json", b"h-0"),
        testing.Raw(orjson.dumps(start_doc), b"h-3"),
        beta,
    ]
    await testing.produce(per, [*hostile, good], topic=own)
    async with (
        testing.running(per, ALPHA),
        testing.TopicReader(per, per.events_topic) as replies,
        testing.TopicReader(per, per.dlq_topic) as dlq,
    ):
        await replies.reply(good.message_id, timeout_s=60)
        seen = await dlq.until(lambda got: len(got) >= 3, timeout_s=60)
    assert {r.header(DLQ_SOURCE) for r in seen} == {"participant:alpha"}
    assert {r.header(DLQ_TOPIC) for r in seen} == {own}
    assert sorted(r.header(DLQ_CLASS) or "" for r in seen) == sorted(
        ["invalid_json", "wrong_type", "misaddressed"]
    ), [(r.header(DLQ_CLASS), r.header("dlq-error-message")) for r in seen]


def _fetched(alpha: testing.RunningWorker, beta: testing.RunningWorker, n: int) -> Any:
    async def done() -> bool:
        return sum(alpha.worker.fetched.values()) >= n and sum(beta.worker.fetched.values()) >= n

    return done


@pytest.mark.parametrize("mode", ["per-participant", "single"])
async def test_the_orchestrator_never_fetches_its_own_commands(
    settings: Settings,
    made: list[str],
    reader: SagaReader,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """Per-participant: of 3 sagas of two steps, the orchestrator fetches the 3 starts and the
    6 replies, none of the 6 commands it sent. Single (the control): it fetches all 6 too."""
    s = in_mode(make_topics(settings, made), mode)
    ids = [f"o-{i}" for i in range(3)]
    async with (
        running(s, Registry([definition()])) as orch,
        testing.running(s, ALPHA),
        testing.running(s, BETA),
    ):
        spy = Spy(orch, monkeypatch)
        await start(s, *ids)
        assert await reader.wait_final(ids) == dict.fromkeys(ids, "completed")
        if mode == "single":
            await wait_for(
                _async(lambda: spy.commands() == 6), 30, "the orchestrator to fetch 6 commands"
            )
        else:
            assert spy.commands() == 0
            assert {t for t, _ in spy.seen} <= {s.commands_topic, s.events_topic}
            assert sum(1 for t, _ in spy.seen if t == s.commands_topic) == 3  # the starts


def _async(check: Any) -> Any:
    async def predicate() -> bool:
        return bool(check())

    return predicate


async def test_a_step_with_its_own_topic(
    settings: Settings, made: list[str], reader: SagaReader
) -> None:
    """A step's `topic` takes its commands there; a worker reads it when it is one of its
    SAGA_EXTRA_COMMAND_TOPICS; alpha's own topic stays empty."""
    own = f"{settings.commands_topic}-alpha-team"
    per = make_topics(settings, made, own)
    alpha_settings = in_mode(per, "per-participant", extra_command_topics=[own])
    async with (
        running(per, Registry([definition(own)])),
        testing.running(alpha_settings, ALPHA) as alpha,
        testing.running(per, BETA) as beta,
    ):
        await start(per, "t-1")
        assert await reader.wait_final(["t-1"]) == {"t-1": "completed"}
        assert dict(alpha.worker.fetched) == {own: 1}
        assert dict(beta.worker.fetched) == {f"{per.commands_topic}.beta": 1}


@BOTH_REDIS  # the outbox is per partition on the cluster
async def test_the_relay_republishes_to_the_original_topic(
    settings: Settings, made: list[str]
) -> None:
    """Commands a crash left in the outbox go where the daemon would have sent them: the
    participant's topic, or the step's own named in the entry; none to the commands topic."""
    own = f"{settings.commands_topic}-alpha-team"
    per = make_topics(settings, made, own)
    keys = Keys.of(per)
    redis = redis_factory.client(per)
    entries = {
        "beta": [["saga-message-type", "SagaCommand"], ["saga-participant", "beta"]],
        "alpha": [
            ["saga-message-type", "SagaCommand"],
            ["saga-participant", "alpha"],
            [topics.H_COMMAND_TOPIC, own],
        ],
    }
    for name, headers in entries.items():
        outbox = keys.outbox_of(keys.partition(f"orphan-{name}"))
        value = orjson.dumps({"note": f"left by a crash, for {name}"})
        await redis.xadd(outbox, {"k": f"orphan-{name}", "v": value, "h": orjson.dumps(headers)})
    try:
        async with running(per, Registry([definition(own)]), outbox_sweep_age_s=0.2) as orch:

            async def both() -> bool:
                return orch.metrics.outbox_republished == 2

            await wait_for(both, 60, "the relay to re-publish both entries")
        beta = await read_all(per, f"{per.commands_topic}.beta", expect=1)
        alpha = await read_all(per, own, expect=1)
        assert [r.key for r in beta] == [b"orphan-beta"]
        assert [r.key for r in alpha] == [b"orphan-alpha"]
        assert await records_on(per, per.commands_topic) == 0
        assert await records_on(per, f"{per.commands_topic}.alpha") == 0
    finally:
        await redis.aclose()


async def records_on(settings: Settings, topic: str) -> int:
    """Records ever written to `topic` (the sum of its end offsets)."""
    from aiokafka import TopicPartition

    meta = await asyncio.to_thread(lambda: kafka.admin(settings).list_topics(timeout=10))
    parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        ends = await consumer.end_offsets(parts)
    return sum(ends.values())


async def test_switching_from_the_single_topic_runs_the_commands_left_there(
    settings: Settings, made: list[str], reader: SagaReader
) -> None:
    """The documented switch (docs/OPERATIONS.md): a single-mode orchestrator sent step a's
    command to the commands topic, and nobody ran it yet. The orchestrator restarts in
    per-participant mode; alpha's worker, per-participant with the commands topic as an extra
    topic for the transition, runs that command (attempt 1, no retry); step b's command goes
    to beta's own topic, and beta, per-participant without the extra topic, reads only that."""
    per = make_topics(settings, made)
    single = in_mode(per, "single")
    registry = Registry([definition()])
    async with running(single, registry):
        await start(single, "up-1")

        async def sent() -> bool:
            seen = await read_all(single, single.commands_topic, expect=2, timeout_s=1)
            return any(header(r.headers, H_MESSAGE_TYPE) == "SagaCommand" for r in seen)

        await wait_for(sent, 60, "step a's command on the commands topic")
    transition = in_mode(per, "per-participant", extra_command_topics=[per.commands_topic])
    async with (
        running(per, registry),
        testing.running(transition, ALPHA) as alpha,
        testing.running(per, BETA) as beta,
    ):
        assert await reader.wait_final(["up-1"]) == {"up-1": "completed"}
        # step a ran from the commands topic: no retry ever went to alpha's own topic
        assert alpha.worker.fetched[per.commands_topic] >= 2  # the start and step a's command
        assert alpha.worker.fetched[f"{per.commands_topic}.alpha"] == 0
        assert dict(beta.worker.fetched) == {f"{per.commands_topic}.beta": 1}


async def test_real_processes_in_the_default_mode(
    settings: Settings, made: list[str], reader: SagaReader, tmp_path: Path
) -> None:
    """`saga orchestrator run` and `saga participant run` as processes, with the default mode
    (no SAGA_COMMAND_TOPICS at all): the orchestrator creates the participant's topic with
    the commands topic's partition count (3 here; the broker's default is 6), the saga
    completes, and the commands topic holds nothing but the start."""
    own = f"{settings.commands_topic}.greeter"
    made.append(own)
    module = '["tests.support.user_sagas"]'
    env = orchestrator_env(settings, SAGA_SAGA_MODULES=module)
    env.pop("SAGA_COMMAND_TOPICS", None)  # orchestrator_env names the mode: run the default
    orch = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.ops.cli", "orchestrator", "run"],
        env=env, cwd=ROOT, stdout=(tmp_path / "orch.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    procs = [orch]
    try:
        admin = kafka.admin(settings)

        async def created() -> bool:
            if orch.poll() is not None:
                raise AssertionError((tmp_path / "orch.log").read_text()[-2000:])
            have = await asyncio.to_thread(lambda: admin.list_topics(timeout=10).topics)
            return own in have

        # the worker starts after: subscribing first, it would have Kafka auto-create the
        # topic with the broker's defaults (docs/OPERATIONS.md, step 0 of the switch)
        await wait_for(created, 90, f"the orchestrator to create {own}")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "orchestrator.ops.cli", "participant", "run",
                 "tests.support.user_sagas:greeter"],
                env=env, cwd=ROOT, stdout=(tmp_path / "worker.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        start_doc = {"sagaId": "g-1", "command": "StartSaga", "sagaType": "greeting",
                     "data": {"name": "Ada"}}  # fmt: skip
        await produce(settings, settings.commands_topic, [(b"g-1", orjson.dumps(start_doc))])
        done = await reader.wait_final(["g-1"], timeout_s=120)
        assert done == {"g-1": "completed"}, (tmp_path / "orch.log").read_text()[-2000:]
        meta = await asyncio.to_thread(lambda: kafka.admin(settings).list_topics(timeout=10))
        assert len(meta.topics[own].partitions) == 3
        assert await records_on(settings, own) == 2  # compose and deliver
        assert await records_on(settings, settings.commands_topic) == 1  # the start only
    finally:
        for proc in procs:
            stop(proc)


async def test_a_topic_kafka_refuses_is_a_clear_error(settings: Settings, made: list[str]) -> None:
    """A topic the broker will not create (here it collides with `<commands>_alpha`: Kafka
    refuses names differing only by '.' and '_') is a ConfigError naming the topic and the way
    out; a missing commands topic too."""
    per = in_mode(settings, "per-participant")
    clash = f"{settings.commands_topic}_alpha"
    made.append(clash)
    kafka.create_topics(per, [clash], 1)
    with pytest.raises(ConfigError) as info:
        topics.ensure(per, [f"{settings.commands_topic}.alpha"])
    text = str(info.value)
    assert f"cannot create command topic '{settings.commands_topic}.alpha'" in text
    assert "SAGA_COMMAND_TOPICS=single" in text
    gone = in_mode(per, "per-participant", commands_topic=f"{settings.commands_topic}-nope")
    with pytest.raises(ConfigError, match="does not exist"):
        topics.ensure(gone, [f"{gone.commands_topic}.alpha"])


def test_a_bad_step_topic_stops_the_orchestrator_at_start(
    settings: Settings, tmp_path: Path
) -> None:
    """A saga module whose step names the events topic as its own: the process exits 2 with
    one line naming the step and the collision, before it reads anything."""
    module = tmp_path / "h5_bad_topic_sagas.py"
    module.write_text(
        "from orchestrator.core.definition import SagaDefinition, StepDef\n"
        f"SAGAS = [SagaDefinition('bad', 1, (StepDef('a', 'alpha', 'DoA', 'UndoA', "
        f"topic={settings.events_topic!r}),))]\n"
    )
    env = orchestrator_env(
        settings,
        SAGA_COMMAND_TOPICS="per-participant",
        SAGA_SAGA_MODULES='["h5_bad_topic_sagas"]',
        PYTHONPATH=f"{tmp_path}{os.pathsep}{Path(__file__).resolve().parents[1]}",
    )
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", "orchestrator", "run"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr.decode()[-2000:]
    err = done.stderr.decode()
    assert "step 'a': topic" in err and "SAGA_EVENTS_TOPIC" in err, err
