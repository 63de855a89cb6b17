"""The guard per fetched batch (issue 12): what is known about a batch's commands is read with
one script call, the commits of different sagas leave together, and each commit stays its own
atomic script. Round trips are counted on the worker's own Redis client (every pipeline and
direct command it sends), which other processes on the shared Redis cannot disturb.

The crash test SIGKILLs a real worker between two round trips of commits of one batch
(crash point `participant.between_commits`): restarted, nothing is lost or done twice."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from infra import kafka
from infra import redis as redis_factory
from infra.rdkafka import Record, TopicPartition
from participants import store as store_module
from participants.batch import BatchProcessor
from participants.config import ParticipantConfig, WorkerOptions
from participants.context import Context, Effects
from participants.keys import SdkKeys, key_for
from participants.participant import Participant
from participants.runtime import Infra, WorkerStats
from participants.store import Known, Store, _known
from participants.testing import TopicReader, command, command_headers, produce
from schemas import codec
from schemas.config import Settings
from schemas.messages import SagaCommand, StepCompensated, StepCompleted
from tests.conftest import BOTH_REDIS
from tests.support.procs import ROOT, orchestrator_env, stop
from tests.test_crash_points import armed, fired
from tests.test_crash_points_participant import read_to_end

pytestmark = BOTH_REDIS  # on the single Redis and on the Redis Cluster

TTL_S = 3600


class RoundTrips:
    """Records every round trip a client makes: the command names of each pipeline it executes
    and of each direct command. Wraps one client instance (its class stays, so the key layout
    that follows the client does too)."""

    def __init__(self, redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[list[str]] = []
        make_pipeline, direct = redis.pipeline, redis.execute_command

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make_pipeline(*args, **kwargs)
            queued: list[str] = []
            queue, execute = pipe.execute_command, pipe.execute

            def execute_command(*cmd: Any, **options: Any) -> Any:
                queued.append(str(cmd[0]).upper())
                return queue(*cmd, **options)

            async def run(*a: Any, **kw: Any) -> Any:
                self.sent.append(queued)
                return await execute(*a, **kw)

            monkeypatch.setattr(pipe, "execute_command", execute_command)
            monkeypatch.setattr(pipe, "execute", run)
            return pipe

        async def one(*cmd: Any, **options: Any) -> Any:
            self.sent.append([str(cmd[0]).upper()])
            return await direct(*cmd, **options)

        monkeypatch.setattr(redis, "pipeline", pipeline)
        monkeypatch.setattr(redis, "execute_command", one)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = redis_factory.client(settings, decode=True)
    yield client
    await client.aclose()


def counter(name: str = "payment") -> Participant:
    """A participant whose action counts per saga with `ctx.tx` (applied in its commit script)
    and whose compensation does the same under another key."""
    svc = Participant(name)

    @svc.action("Count")
    async def count(cmd: SagaCommand, ctx: Context) -> dict[str, str]:
        ctx.tx.hincrby(ctx.key("counted"), cmd.saga_id)
        return {"n": "1"}

    @svc.compensation("Uncount")
    async def uncount(cmd: SagaCommand, ctx: Context) -> None:
        ctx.tx.hincrby(ctx.key("uncounted"), cmd.saga_id)

    return svc


def count(saga: str, attempt: int = 1) -> SagaCommand:
    return command(saga, "payment", "Count", "count", attempt=attempt)


def uncount(saga: str, attempt: int = 1) -> SagaCommand:
    return command(saga, "payment", "Uncount", "count", attempt=attempt, compensation=True)


def as_batch(settings: Settings, cmds: list[SagaCommand]) -> dict[TopicPartition, list[Any]]:
    """The commands as one fetched batch of one partition of the commands topic."""
    records = []
    for offset, cmd in enumerate(cmds):
        value = codec.encode(cmd, settings.output_format)
        key = cmd.saga_id.encode()
        msg = ck.Message(  # what the worker's consumer gets from librdkafka
            topic=settings.commands_topic,
            partition=0,
            offset=offset,
            key=key,
            value=value,
            headers=command_headers(cmd),
            timestamp=(ck.TIMESTAMP_CREATE_TIME, 0),
        )
        records.append(Record(msg))
    return {TopicPartition(settings.commands_topic, 0): records}


async def test_the_lookup_of_a_batch_is_one_script_call(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outcome, done record and tombstone of every command in one EVALSHA, one round trip;
    and the answer is the one the three reads per command give."""
    batched = Store(redis, SdkKeys(settings.key_prefix, "payment"), TTL_S, mode="batched")
    each = Store(redis, SdkKeys(settings.key_prefix, "payment"), TTL_S, mode="per-command")
    await batched.commit(count("a"), {"n": "1"}, Effects())
    await batched.commit(count("b"), {"n": "1"}, Effects())  # b's attempt 2 finds it done
    await batched.commit(uncount("c"), {}, Effects())  # c's action is refused from now on
    cmds = [count("a"), count("b", 2), count("c"), uncount("c", 2), count("d"), uncount("e")]
    await batched.lookup(cmds)  # loads the script (a first call may meet NOSCRIPT)
    trips = RoundTrips(redis, monkeypatch)
    known = await batched.lookup(cmds)
    assert trips.sent == [["EVALSHA"]]
    assert [(k.outcome is not None, k.done, k.tombstone) for k in known] == [
        (True, False, False),  # a: its own outcome, re-sent
        (False, True, False),  # b, attempt 2: the step is done
        (False, False, True),  # c's action: tombstoned
        (False, True, False),  # c's compensation, attempt 2: done (never refused)
        (False, False, False),  # d: new
        (False, False, False),  # e's compensation: new
    ]
    assert known[0].outcome is not None and known[0].outcome.kind == "completed"
    trips.sent.clear()
    assert [k.settled for k in await each.lookup(cmds)] == [k.settled for k in known]
    assert trips.sent == [["GET", "EXISTS", "EXISTS"] * len(cmds)]
    trips.sent.clear()
    assert await batched.lookup([]) == [] and trips.sent == []  # nothing to ask
    monkeypatch.setattr(store_module, "LOOKUP_CHUNK", 4)  # a batch bigger than one call takes
    assert await batched.lookup(cmds) == known
    assert trips.sent == [["EVALSHA", "EVALSHA"]]  # two calls, one round trip


@pytest.mark.parametrize("mode", ["batched", "per-command"])
async def test_a_batch_reads_once_and_commits_together(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A batch of twelve sagas' commands: batched, one round trip for the guard's lookup and one
    for the twelve commit scripts (each its own EVALSHA, so each its own atomic step); per
    command, the reads of each command and a round trip per commit. Either way each saga is
    counted once and answered once."""
    svc = counter()
    store = Store(redis, SdkKeys(settings.key_prefix, svc.name), TTL_S, mode=mode)
    sagas = [f"s{i}" for i in range(12)]
    stats = WorkerStats()
    infra = Infra(asyncio.Event(), 0.5, logging.getLogger("test.batched_guard"), stats)
    async with kafka.started(kafka.rd_producer(settings)) as producer:
        processor = BatchProcessor(
            settings, svc, WorkerOptions(), store, producer, infra, stats, random.Random(1)
        )
        # a first batch loads the scripts: no NOSCRIPT round trip in the one counted
        assert await processor.process(as_batch(settings, [count("warm-up")]))
        trips = RoundTrips(redis, monkeypatch)
        assert await processor.process(as_batch(settings, [count(s) for s in sagas]))
    if mode == "batched":
        assert trips.sent == [["EVALSHA"], ["EVALSHA"] * 12]
    else:
        assert trips.sent == [["GET", "EXISTS", "EXISTS"] * 12] + [["EVALSHA"]] * 12
    assert stats.replies == 13 and stats.outcomes == {"completed": 13}
    counted = await redis.hgetall(key_for(redis, settings.key_prefix, svc.name, "counted"))
    assert counted == dict.fromkeys(["warm-up", *sagas], "1")


@pytest.mark.parametrize("value", ["Batched", "off", "per_command", "batched;rm", "x" * 200])
def test_a_guard_mode_that_is_not_one_is_refused(value: str, redis_mode: str) -> None:
    """SAGA_PARTICIPANT_GUARD takes `batched` (the default) or `per-command`; any other value is
    a settings error naming the variable, and a Store refuses it too."""
    assert ParticipantConfig().worker_options().guard == "batched"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SAGA_PARTICIPANT_GUARD", "per-command")
        assert ParticipantConfig().worker_options().guard == "per-command"
        env.setenv("SAGA_PARTICIPANT_GUARD", value)
        with pytest.raises(ValidationError, match="participant_guard"):
            ParticipantConfig()
    with pytest.raises(ValueError, match="use one of batched, per-command"):
        Store(Redis(), SdkKeys("p", "payment"), TTL_S, mode=value)


def test_a_bad_guard_mode_stops_the_worker_at_start(settings: Settings) -> None:
    """`saga participant run` with a bad SAGA_PARTICIPANT_GUARD exits 2 with one line naming
    the variable, before it reads anything."""
    env = orchestrator_env(settings, SAGA_PARTICIPANT_GUARD="bogus")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", "participant", "run", "payment"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: setting SAGA_PARTICIPANT_GUARD:" in proc.stderr and "'bogus'" in proc.stderr


def test_known_from_a_lookup_answer(redis_mode: str) -> None:
    """lookup.lua's flags: 1 done, 2 tombstone (refusing actions only)."""
    assert _known(count("a"), 3) == Known(None, True, True)
    assert _known(uncount("a"), 3) == Known(None, True, False)
    assert _known(count("a"), 0) == Known(None, False, False)


# ---- a crash between two commits of one batch ------------------------------------------------

POINT = "participant.between_commits"
N_SAGAS = 10


def start_worker(settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """`saga participant run` of `counter` (this module's), a real process to SIGKILL."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.ops.cli",
                "participant",
                "run",
                f"{__name__}:counter",
            ],
            env=orchestrator_env(settings, **extra),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_kill_between_two_commits_of_a_batch_loses_and_repeats_nothing(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """Each saga's action and then its compensation, all produced before the worker starts: the
    actions of a batch commit in one round trip, the compensations (each after its saga's
    action) in the next. SIGKILL right after the first: actions counted, no compensation, no
    reply. The restarted worker re-sends the stored replies of the actions and runs the
    compensations. Both counters are plain increments, so anything applied twice would show:
    each saga is counted once and uncounted once, every command is answered, and every copy of
    a reply is the same message."""
    sagas = [f"bk{i}" for i in range(N_SAGAS)]
    await produce(settings, [c for s in sagas for c in (count(s), uncount(s))])
    log, marker = tmp_path / "worker.log", tmp_path / "marker"
    proc = start_worker(settings, log, **armed(POINT, marker))

    async def counters() -> tuple[dict[str, str], dict[str, str]]:
        def key(name: str) -> str:
            return key_for(redis, settings.key_prefix, "payment", name)

        return await redis.hgetall(key("counted")), await redis.hgetall(key("uncounted"))

    try:
        await fired(proc, marker, POINT, log)
        counted, uncounted = await counters()
        # the first round trip carried the actions of several sagas (each partition of the
        # commands topic holds at least two of these sagas: bk0..bk9 hash 5/3/2)
        assert len(counted) >= 2 and set(counted.values()) == {"1"}, counted
        assert uncounted == {}, uncounted
        assert await read_to_end(settings, settings.events_topic) == []  # no reply left
        async with TopicReader(settings, settings.events_topic) as events:
            proc = start_worker(settings, log)
            ids = [c.message_id for s in sagas for c in (count(s), uncount(s))]
            await events.replies(ids, timeout_s=120)
            assert await counters() == (dict.fromkeys(sagas, "1"), dict.fromkeys(sagas, "1"))
            for s in sagas:
                first = events.replies_to(count(s).message_id)
                assert isinstance(first[0], StepCompleted) and all(r == first[0] for r in first)
                again = events.replies_to(uncount(s).message_id)
                assert isinstance(again[0], StepCompensated) and all(r == again[0] for r in again)
    finally:
        if proc.poll() is None:
            stop(proc)
