"""Named crash points (infra/crashpoints.py) in the orchestrator: a real process SIGKILLs itself
at one exact gap, the test checks the gap's own evidence (what was written, sent, committed at
the kill), restarts it without the crash setting, and checks every saga completes exactly once
and the group's committed offsets reach the end. The participant's point, in
test_crash_points_participant.py."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from infra import crashpoints, kafka
from infra.crashpoints import POINTS, CrashPlan, CrashPointError, parse
from schemas import codec
from schemas.config import Settings
from tests.conftest import BOTH_REDIS
from tests.support import commands
from tests.support.kafka import produce, wait_for
from tests.support.orch import SagaReader
from tests.support.procs import ROOT, orchestrator_env, start_orchestrator, stop
from tests.support.scripted import ScriptedParticipant
from tests.test_orchestrator_crash import PATIENT, assert_exactly_once, completed_count
from tests.test_orchestrator_e2e import start_order

N_SAGAS = 200
#: the relay re-publishes an outbox entry this old (the default is 5 s)
SWEEP = {"SAGA_OUTBOX_SWEEP_AGE_S": "1"}


def armed(point: str, marker: Path, after: int = 0) -> dict[str, str]:
    return {
        "SAGA_CRASH_AT": point,
        "SAGA_CRASH_AFTER": str(after),
        "SAGA_CRASH_MARKER": str(marker),
    }


async def fired(
    proc: subprocess.Popen[bytes], marker: Path, point: str, log: Path, timeout_s: float = 120
) -> dict[str, str]:
    """Wait until `proc` is dead by SIGKILL and the marker says `point` fired in it: the kill
    fell in that gap, not anywhere else. Returns the context the point wrote after its name
    (`partition=3 sent=12` -> {"partition": "3", "sent": "12"})."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"{point} never fired:\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.05)
    assert proc.returncode == -9, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
    lines = marker.read_text().splitlines() if marker.exists() else []
    mine = [
        line for line in lines if line.startswith(f"crash point {point} fired (pid {proc.pid},")
    ]
    assert mine, (lines, log.read_text()[-3000:])
    return dict(kv.split("=", 1) for kv in mine[-1].split(")", 1)[1].split())


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = kafka.consumer(settings, group_id=None)
    async with kafka.started(consumer):
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}


async def committed(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    consumer = kafka.consumer(settings, group_id=group)  # never joins: reads the commits only
    async with kafka.started(consumer):
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return {tp.partition: await consumer.committed(tp) for tp in tps}


async def commits_reach_end(settings: Settings, group: str) -> None:
    """The group's committed offsets on both input topics reach their ends (nothing left
    unread, nothing re-read after another restart)."""

    async def at_end() -> bool:
        for topic in (settings.commands_topic, settings.events_topic):
            ends = await end_offsets(settings, topic)
            got = await committed(settings, group, topic)
            if any((got[p] or 0) != end for p, end in ends.items()):
                return False
        return True

    await wait_for(at_end, 120, "the orchestrator's committed offsets to reach the end", 0.5)


def group(settings: Settings) -> str:
    return f"{settings.key_prefix}-orchestrator"


async def outbox(reader: SagaReader) -> dict[tuple[int, str], str]:
    """The orchestrator's outbox, every partition's: (partition, entry id) -> the command id it
    holds."""
    out = {}
    for part in reader.keys.all_partitions():
        rows = await reader.redis.xrange(reader.keys.outbox_of(part))
        out |= {(part, rid): codec.decode(f["v"].encode()).message_id for rid, f in rows}
    return out


def _by_id(item: tuple[tuple[int, str], str]) -> tuple[int, int, int]:
    """An outbox entry by partition, then stream id (`<ms>-<seq>`, compared as numbers)."""
    (part, rid), _ = item
    ms, seq = rid.split("-")
    return part, int(ms), int(seq)


def alive(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            stop(proc)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["orchestrator.after_step", "orchestrator.after_publish"])
@BOTH_REDIS
async def test_kill_between_step_publish_and_commit(
    settings: Settings, reader: SagaReader, tmp_path: Path, point: str
) -> None:
    """SIGKILL on the first batch of starts, after its steps are in Redis and either before its
    commands are sent or before its offsets are committed; restarted: every saga completes
    exactly once, with one command id per step."""
    ids = [f"cp-{i}" for i in range(N_SAGAS)]
    log, marker = tmp_path / "orch.log", tmp_path / "marker"
    await produce(settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids])
    async with ScriptedParticipant(settings) as p:
        proc = start_orchestrator(settings, log, **PATIENT, **SWEEP, **armed(point, marker))
        try:
            await fired(proc, marker, point, log)
            # the participant commands sent (in single mode the starts share their topic)
            starts = 0 if commands.per_participant(settings) else N_SAGAS
            sent = await commands.records_on(settings) - starts
            left = await outbox(reader)
            commits = await committed(settings, group(settings), settings.commands_topic)
            assert set(commits.values()) == {None}
            if point == "orchestrator.after_step":  # written, none of it sent
                assert left and sent == 0, (len(left), sent)
            else:  # sent and acked (so out of the outbox), not committed
                assert not left and sent > 0, (len(left), sent)
            proc = start_orchestrator(settings, log, **PATIENT, **SWEEP)
            await assert_exactly_once(reader, p, ids)
            await commits_reach_end(settings, group(settings))
        finally:
            alive(proc)


@pytest.mark.slow
@pytest.mark.timeout(600)
@BOTH_REDIS
async def test_kill_in_the_relay_between_publish_and_delete(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """A crash after the step leaves an outbox; the relay re-publishes it and is SIGKILLed
    before deleting it; restarted, it re-publishes the same commands once more (same ids) and
    every saga still completes exactly once. The relay serves its partitions at once, so the
    kill falls after whichever partition's sends were acked first: the marker names it."""
    ids = [f"cr-{i}" for i in range(N_SAGAS)]
    log, marker = tmp_path / "orch.log", tmp_path / "marker"
    await produce(settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids])
    async with ScriptedParticipant(settings) as p:
        step = "orchestrator.after_step"
        proc = start_orchestrator(settings, log, **PATIENT, **SWEEP, **armed(step, marker))
        try:
            await fired(proc, marker, step, log)
            orphans = await outbox(reader)
            assert orphans, "the crash after the step left no outbox entry"
            proc = start_orchestrator(
                settings, log, **PATIENT, **SWEEP, **armed("relay.after_publish", marker)
            )
            where = await fired(proc, marker, "relay.after_publish", log)
            # that partition's oldest entries were sent and acked (the participant gets them),
            # and still in the outbox; the other partitions' sends may or may not have left
            left = await outbox(reader)
            assert orphans.items() <= left.items()
            part, n_sent, n_acked = int(where["partition"]), int(where["sent"]), int(where["acked"])
            assert 0 < n_sent == n_acked, f"the relay's sends were not all acked: {where}"
            sent = [cid for (q, _), cid in sorted(orphans.items(), key=_by_id) if q == part]
            assert len(sent) >= n_sent, (where, len(sent))
            sent = sent[:n_sent]  # the relay reads an outbox oldest first

            async def delivered(cids: list[str], times: int) -> bool:
                seen = [c.message_id for c in p.seen]
                return all(seen.count(cid) >= times for cid in cids)

            await wait_for(lambda: delivered(sent, 1), 60, "the relay's commands to arrive")
            proc = start_orchestrator(settings, log, **PATIENT, **SWEEP)
            await wait_for(lambda: delivered(sent, 2), 120, f"partition {part}'s sent again")
            everything = list(orphans.values())
            await wait_for(lambda: delivered(everything, 1), 120, "every orphan re-published")
            await assert_exactly_once(reader, p, ids)
            await commits_reach_end(settings, group(settings))
            assert await outbox(reader) == {}
        finally:
            alive(proc)


@pytest.mark.slow
@BOTH_REDIS
async def test_kill_inside_a_partition_revoke(
    settings: Settings, reader: SagaReader, tmp_path: Path
) -> None:
    """A second copy joins the group: the first is SIGKILLed inside its revoke with every saga
    in flight and more starts arriving; the second takes the partitions, the first is
    restarted: every saga completes exactly once."""
    first, second = [f"cv-{i}" for i in range(N_SAGAS)], [f"cw-{i}" for i in range(N_SAGAS)]
    marker = tmp_path / "marker"
    a = start_orchestrator(
        settings, tmp_path / "a.log", **PATIENT, **armed("orchestrator.in_revoke", marker)
    )
    b = a2 = None
    try:
        await produce(
            settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in first]
        )

        async def started() -> bool:  # no participant yet: each saga waits at its first step
            assert a.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
            async with reader.redis.pipeline(transaction=False) as pipe:
                for sid in first:
                    pipe.exists(reader.keys.saga(sid))
                return all(await pipe.execute())

        await wait_for(started, 120, "the first copy to start every saga")
        b = start_orchestrator(settings, tmp_path / "b.log", **PATIENT)
        await produce(
            settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in second]
        )
        await fired(a, marker, "orchestrator.in_revoke", tmp_path / "a.log")
        assert await completed_count(reader) == 0
        async with ScriptedParticipant(settings) as p:
            a2 = start_orchestrator(settings, tmp_path / "a.log", **PATIENT)
            await assert_exactly_once(reader, p, first + second)
            await commits_reach_end(settings, group(settings))
    finally:
        alive(*(x for x in (a, b, a2) if x is not None))


# ---- the switch itself ------------------------------------------------------------------------


def test_unset_means_nothing_armed() -> None:
    """No variable: nothing armed, and `crash_point` returns for every point."""
    assert parse({}) == CrashPlan()
    if not crashpoints._armed:  # the test run itself is not armed
        for name in POINTS:
            crashpoints.crash_point(name)


def test_a_plan_fires_after_n_passes_per_point() -> None:
    """SAGA_CRASH_AFTER=2: each named point passes twice and fires on its third hit."""
    at = " relay.after_publish ,orchestrator.in_revoke"
    plan = parse({"SAGA_CRASH_AT": at, "SAGA_CRASH_AFTER": "2", "SAGA_CRASH_MARKER": "/tmp/m"})
    assert plan.armed == {"relay.after_publish", "orchestrator.in_revoke"}
    assert plan.marker == "/tmp/m"
    assert [plan.should_fire("relay.after_publish") for _ in range(3)] == [False, False, True]
    assert [plan.should_fire("orchestrator.in_revoke") for _ in range(3)] == [False, False, True]


def test_a_fired_point_writes_its_context_then_dies_by_sigkill(tmp_path: Path) -> None:
    """An armed point given context appends `name=value` pairs to its marker line and to
    stderr (how the relay test learns which partition the kill fell after), then the process
    dies by SIGKILL."""
    marker = tmp_path / "marker"
    code = (
        "from infra.crashpoints import crash_point\n"
        "crash_point('relay.after_publish', partition=3, sent=12, acked=11)\n"
        "raise SystemExit(0)\n"  # not reached: exit 0 would mean the point did not fire
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), **armed("relay.after_publish", marker)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err
    head = f"crash point relay.after_publish fired (pid {proc.pid}, hit 1)"
    line = f"{head} partition=3 sent=12 acked=11\n"
    assert marker.read_text() == line
    assert err.decode() == line


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"SAGA_CRASH_AT": "orchestrator.after_stpe"}, "crash point(s) 'orchestrator.after_stpe'"),
        ({"SAGA_CRASH_AT": "relay.after_publish,nope"}, "unknown crash point(s) 'nope'"),
        ({"SAGA_CRASH_AT": "ORCHESTRATOR.AFTER_STEP"}, "unknown crash point"),
        ({"SAGA_CRASH_AT": "relay.after_publish,,"}, "an empty name"),
        ({"SAGA_CRASH_AT": ","}, "an empty name"),
        ({"SAGA_CRASH_AT": "relay.after_publish", "SAGA_CRASH_AFTER": "-1"}, "not a non-negative"),
        ({"SAGA_CRASH_AT": "relay.after_publish", "SAGA_CRASH_AFTER": "two"}, "not a non-negative"),
        ({"SAGA_CRASH_AT": "relay.after_publish", "SAGA_CRASH_AFTER": "1.5"}, "not a non-negative"),
        ({"SAGA_CRASH_AT": "relay.after_publish", "SAGA_CRASH_AFTER": "²"}, "not a non-negative"),
        ({"SAGA_CRASH_AT": "relay.after_publish", "SAGA_CRASH_AFTER": ""}, "not a non-negative"),
        ({"SAGA_CRASH_AFTER": "3"}, "SAGA_CRASH_AT names no crash point"),
        ({"SAGA_CRASH_AT": " ", "SAGA_CRASH_AFTER": "0"}, "SAGA_CRASH_AT names no crash point"),
    ],
)  # fmt: skip
def test_hostile_settings_are_refused_by_name(env: dict[str, str], error: str) -> None:
    """A misspelt point, an empty name or a bad count is an error naming the variable."""
    with pytest.raises(CrashPointError) as exc:
        parse(env)
    assert error in str(exc.value)


@pytest.mark.parametrize("command", [["orchestrator", "run"], ["participant", "run", "payment"]])
def test_an_unknown_point_stops_start_up(settings: Settings, command: list[str]) -> None:
    """`saga orchestrator run` and `saga participant run` with a misspelt point exit at once
    with the error, instead of running with nothing armed."""
    env = orchestrator_env(settings, SAGA_CRASH_AT="orchestrator.after_stpe")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", *command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: SAGA_CRASH_AT: unknown crash point(s) 'orchestrator.after_stpe'" in (proc.stderr)
    assert "orchestrator.after_step" in proc.stderr  # the known ones are listed


def test_every_point_is_placed_once_and_every_call_is_known() -> None:
    """The closed set and the code agree: each point sits at exactly one place, and no call
    names a point that the environment could never arm."""
    calls: list[str] = []
    for path in [*ROOT.glob("orchestrator/**/*.py"), *ROOT.glob("participants/**/*.py")]:
        calls += re.findall(r"crash_point\(\s*\"([^\"]+)\"\s*[,)]", path.read_text())
    assert sorted(calls) == sorted(POINTS)
