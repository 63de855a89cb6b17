"""Saga definitions are checked against the wire contract when their module loads: a name,
limit or policy that would fail later, while the loop builds a command, stops start-up with one
line naming the module, the saga, the step and the field."""

from __future__ import annotations

import asyncio
import math
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from orchestrator.core.definition import RetryPolicy, SagaDefinition, StepDef
from orchestrator.core.model import (
    Command,
    SagaState,
    Status,
    StepState,
    TimerDue,
    command_id,
    timer_member,
)
from orchestrator.engine.sagas import LONGEST_SAGA_ID, check_definition, load_sagas
from orchestrator.engine.translate import command_record, timer_record
from orchestrator.errors import ConfigError
from schemas import codec
from schemas.config import Settings
from schemas.messages import SagaId, StartSaga
from tests.support.kafka import produce
from tests.support.procs import ROOT, orchestrator_env

MAX = RetryPolicy(max_attempts=1000)


def saga(*steps: StepDef, name: str = "trip") -> SagaDefinition:
    return SagaDefinition(name, 1, steps)


def step(**overrides: object) -> StepDef:
    fields: dict[str, object] = {
        "name": "book",
        "participant": "airline",
        "action": "Book",
        "compensation": "Cancel",
    }
    fields.update(overrides)
    return StepDef(**fields)  # type: ignore[arg-type]


BAD: dict[str, tuple[SagaDefinition, str]] = {
    "step name with a space": (saga(step(name="book flight")), "step 'book flight', field name"),
    "step name with a colon": (saga(step(name="a:b")), "step 'a:b', field name"),
    "participant with a pipe": (saga(step(participant="air|line")), "field participant"),
    "participant with trailing space": (saga(step(participant="airline ")), "field participant"),
    "action too long": (saga(step(action="A" * 65)), "field action"),
    "compensation empty": (saga(step(compensation="")), "field compensation"),
    "compensation not text": (saga(step(compensation=None)), "field compensation"),
    "action starts with a digit": (saga(step(action="1Book")), "field action"),
    "too many attempts": (
        saga(step(retry=RetryPolicy(max_attempts=1001))),
        "field retry.max_attempts",
    ),
    "too many compensation attempts": (
        saga(step(compensation_retry=RetryPolicy(max_attempts=5000))),
        "field compensation_retry.max_attempts",
    ),
    "saga name with a space": (saga(step(), name="my trip"), "saga 'my trip', field name"),
    "saga name too long": (saga(step(), name="t" * 65), "field name"),
}


@pytest.mark.parametrize(("definition", "names"), BAD.values(), ids=BAD.keys())
def test_a_definition_that_breaks_the_wire_is_refused_in_one_line(
    definition: SagaDefinition, names: str
) -> None:
    """One line naming the module, the saga, the step (when a step is at fault) and the field."""
    with pytest.raises(ConfigError) as info:
        check_definition("my.sagas", definition)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"saga module 'my.sagas': saga {definition.name!r}")
    assert names in message, message


def test_the_widest_definition_the_wire_allows_loads_and_builds_every_message() -> None:
    """At the limits (64-char names, 1000 attempts, the longest saga id) the check accepts the
    definition, and the daemon's own builders really produce every command and timer."""
    wide = StepDef("s" * 64, "p" * 64, "A" * 64, "C" * 64, retry=MAX, compensation_retry=MAX)
    definition = SagaDefinition("t" * 64, 1, (wide,))
    check_definition("my.sagas", definition)
    state = SagaState(
        LONGEST_SAGA_ID, definition.name, 1, Status.PENDING, 0, (StepState(),), {"k": "v"}
    )
    for compensation in (False, True):
        cid = command_id(LONGEST_SAGA_ID, wide.name, compensation, 1000)
        kind = wide.compensation if compensation else wide.action
        cmd = Command(cid, wide.participant, kind, wide.name, 1000, compensation)
        entry = command_record(state, cmd, "cause", "json", definition)
        assert codec.decode(entry.value).message_id == cid  # type: ignore[attr-defined]
        member = timer_member(LONGEST_SAGA_ID, "timeout", wide.name, 1000, compensation)
        due = TimerDue("timeout", wide.name, 1000, compensation)
        timer_record(LONGEST_SAGA_ID, member, due, "json")


def test_the_longest_saga_id_is_the_wires() -> None:
    """The check builds ids from the longest saga id the wire accepts, not a shorter one."""
    TypeAdapter(SagaId).validate_python(LONGEST_SAGA_ID)
    with pytest.raises(ValidationError):
        TypeAdapter(SagaId).validate_python(LONGEST_SAGA_ID + "x")


@pytest.mark.parametrize(
    "build",
    [
        lambda: StepDef("s", "p", "A", "C", timeout_s=math.nan),
        lambda: StepDef("s", "p", "A", "C", compensation_timeout_s=math.inf),
        lambda: RetryPolicy(initial_backoff_s=math.nan),
        lambda: RetryPolicy(max_backoff_s=math.inf),
        lambda: RetryPolicy(max_attempts=2.5),  # type: ignore[arg-type]
        lambda: SagaDefinition("s", 0, (step(),)),
        lambda: SagaDefinition("s", True, (step(),)),
        lambda: SagaDefinition("s", 1, ("book",)),  # type: ignore[arg-type]
    ],
    ids=["nan-timeout", "inf-timeout", "nan-backoff", "inf-backoff", "fractional-attempts",
         "version-0", "version-bool", "step-not-a-stepdef"],
)  # fmt: skip
def test_values_no_timer_can_hold_are_refused_when_built(build: object) -> None:
    """NaN or infinite durations, fractional attempt counts and odd versions never reach
    decide(), where they would break a timer's due time or a hash field."""
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def write_module(tmp_path: Path, body: str) -> str:
    name = f"bad_sagas_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


BAD_MODULE = """
    from orchestrator.core.definition import SagaDefinition, StepDef

    SAGAS = [SagaDefinition("trip", 1, (StepDef("book flight", "airline", "Book", "Cancel"),))]
"""


def test_load_sagas_refuses_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_sagas (the daemon's, the CLI's and the HTTP API's path) applies the check."""
    name = write_module(tmp_path, BAD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ConfigError, match=rf"saga module '{name}': saga 'trip' version 1, step"):
        load_sagas([name])


async def test_orchestrator_run_exits_2_with_one_line(settings: Settings, tmp_path: Path) -> None:
    """`saga orchestrator run` with a bad definition exits 2 with one line on stderr, before it
    consumes anything; a StartSaga already waiting for it cannot crash it."""
    name = write_module(tmp_path, BAD_MODULE)
    start = StartSaga(saga_id=f"bad-{uuid.uuid4().hex[:8]}", saga_type="trip", data={})
    await produce(
        settings, settings.commands_topic, [(start.saga_id.encode(), codec.encode(start))]
    )
    env = orchestrator_env(
        settings,
        SAGA_SAGA_MODULES=f'["{name}"]',
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        SAGA_LOG_LEVEL="ERROR",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.ops.cli",
        "orchestrator",
        "run",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, err.decode()[-2000:])
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: saga module '{name}': saga 'trip' version 1, step"), lines
    assert "field name" in lines[0]
