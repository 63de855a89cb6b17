"""Per-participant command topics, without Kafka: the settings, the step's own topic, where a
command goes, what a worker reads, how it routes a record of its own topic, and the clear
error for every bad topic name (a setting, a definition, a derived name)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from pydantic import ValidationError

from orchestrator import runner
from orchestrator.config import OrchestratorSettings
from orchestrator.core import definition as core_definition
from orchestrator.core.definition import Registry, SagaDefinition, StepDef
from orchestrator.core.definition import wait_for as wait_step
from orchestrator.core.model import Command, SagaState, Status, StepState
from orchestrator.engine import topics
from orchestrator.engine.translate import command_record
from orchestrator.errors import ConfigError
from participants.routing import DeadLetter, Deliver, Skip, command_topics, dedicated, route
from participants.testing import command, command_headers
from schemas import codec
from schemas import config as schema_config
from schemas.config import Settings
from schemas.dlq import header
from schemas.headers import H_MESSAGE_TYPE, H_PARTICIPANT
from scripts.stack_topics import with_participant_topics
from tests.support.kafka import wait_for

PER = Settings(command_topics="per-participant")
SINGLE = Settings(command_topics="single")
BAD_NAMES = ["bad topic", "", ".", "..", "x" * 250, "saga/commands", "caf\u00e9", "a\nb"]


def two_steps(topic: str = "") -> SagaDefinition:
    return SagaDefinition(
        "two_step",
        1,
        (
            StepDef("a", "alpha", "DoA", "UndoA", topic=topic),
            StepDef("b", "beta", "DoB", "UndoB"),
        ),
    )


# ---- settings ----


def test_the_default_mode_is_per_participant() -> None:
    """A user who sets nothing gets per-participant topics (the measured better mode)."""
    assert Settings.model_fields["command_topics"].default == "per-participant"


def test_command_topic_of_follows_the_mode() -> None:
    """Per-participant: `<commands topic>.<participant>`; single: the commands topic."""
    assert PER.command_topic_of("payment") == "saga-commands.payment"
    assert SINGLE.command_topic_of("payment") == "saga-commands"


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("env", ["SAGA_COMMANDS_TOPIC", "SAGA_EVENTS_TOPIC", "SAGA_DLQ_TOPIC"])
def test_a_bad_topic_setting_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: str, name: str
) -> None:
    """A topic setting Kafka would refuse fails at start, naming the variable and the rule."""
    monkeypatch.setenv(env, name)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert f"{env} {name!r}"[:60] in str(info.value)
    assert "is not a Kafka topic name" in str(info.value)


@pytest.mark.parametrize("value", ["per_participant", "both", "", "SINGLE"])
def test_an_unknown_mode_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """SAGA_COMMAND_TOPICS takes exactly the two modes, and says which."""
    monkeypatch.setenv("SAGA_COMMAND_TOPICS", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "'per-participant' or 'single'" in str(info.value)


@pytest.mark.parametrize("raw", ['["ok", "bad topic"]', '"not-a-list"', "[1]", '["."]'])
def test_bad_extra_command_topics_are_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    """SAGA_EXTRA_COMMAND_TOPICS is a JSON list of topic names; anything else is refused."""
    monkeypatch.setenv("SAGA_EXTRA_COMMAND_TOPICS", raw)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "extra_command_topics" in str(info.value)


def test_the_core_and_the_settings_agree_on_topic_names() -> None:
    """The core may not import schemas, so it keeps its own copy of the rule: the same one."""
    assert core_definition.TOPIC_NAME.pattern == schema_config.TOPIC_NAME.pattern


# ---- the step's own topic ----


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n] + [5, None, b"bytes"])
def test_a_bad_step_topic_is_a_clear_error(name: object) -> None:
    """A step topic that is not a Kafka topic name fails when the definition is built, naming
    the step and the value."""
    with pytest.raises(ValueError) as info:
        StepDef("a", "alpha", "DoA", "UndoA", topic=name)  # type: ignore[arg-type]
    assert "step 'a': topic" in str(info.value)
    assert "Kafka topic name" in str(info.value)


def test_a_wait_step_has_no_topic() -> None:
    """A wait step sends nothing, so a topic on it is a mistake, said so."""
    step = wait_step("approval", "approve")
    with pytest.raises(ValueError, match="action, compensation and topic must be empty"):
        StepDef(step.name, "", "", "", signal="approve", topic="x.y")


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("saga-commands", "SAGA_COMMANDS_TOPIC"),
        ("saga-events", "SAGA_EVENTS_TOPIC"),
        ("saga-dlq", "SAGA_DLQ_TOPIC"),
    ],
)
def test_a_step_topic_may_not_be_a_saga_topic(topic: str, why: str) -> None:
    """A step whose commands would land where the orchestrator reads inputs (or on the DLQ)
    is refused at load, naming the saga, the step and the setting it collides with."""
    with pytest.raises(ConfigError) as info:
        topics.participant_topics(PER, [two_steps(topic)])
    assert "saga 'two_step' version 1, step 'a': topic" in str(info.value)
    assert why in str(info.value)


def test_a_derived_topic_name_too_long_is_a_clear_error() -> None:
    """`<commands topic>.<participant>` must still be a topic name: a long commands topic and
    a long participant name are refused at load, not at the first send."""
    s = Settings(commands_topic="c" * 245, command_topics="per-participant")
    with pytest.raises(ConfigError, match=r"participant topic .* is not a Kafka topic name"):
        topics.participant_topics(s, [two_steps()])


def test_participant_topics_of_the_definitions() -> None:
    """Every participant's topic once (older versions too), the step's own where it has one,
    none for wait steps; none at all in single mode."""
    v1 = two_steps()
    v2 = SagaDefinition("two_step", 2, (*two_steps("team.alpha").steps, wait_step("w", "go")))
    registry = Registry([v1, v2])
    assert topics.registry_topics(PER, registry) == [
        "saga-commands.alpha",
        "saga-commands.beta",
        "team.alpha",
    ]
    assert topics.registry_topics(SINGLE, registry) == []


# ---- where a command goes ----


def _record(definition: SagaDefinition, step: int) -> list[tuple[str, bytes]]:
    state = SagaState("s-1", definition.name, 1, Status.PENDING, 0, (StepState(), StepState()), {})
    s = definition.steps[step]
    cmd = Command(f"s-1:{s.name}:action:1", s.participant, s.action, s.name, 1, False)
    return command_record(state, cmd, "cause", "json", definition).headers


def test_a_command_goes_to_its_participant_or_its_steps_topic() -> None:
    """Per-participant: the participant's topic, or the step's own (carried in a header so the
    relay, which has no definitions, re-publishes it there too); single: the commands topic."""
    d = two_steps("team.alpha")
    own, plain = _record(d, 0), _record(d, 1)
    assert header(own, topics.H_COMMAND_TOPIC) == "team.alpha"
    assert header(plain, topics.H_COMMAND_TOPIC) is None  # no header unless the step has one
    assert topics.of_headers(PER, own) == "team.alpha"
    assert topics.of_headers(PER, plain) == "saga-commands.beta"
    assert topics.of_headers(SINGLE, own) == topics.of_headers(SINGLE, plain) == "saga-commands"


def test_a_command_without_a_participant_header_goes_to_the_commands_topic() -> None:
    """An outbox entry with no participant (not as the daemon writes them) goes where every
    reader of the old layout looks, not to a topic named after nothing."""
    assert topics.of_headers(PER, [(H_MESSAGE_TYPE, b"SagaCommand")]) == "saga-commands"


# ---- what a worker reads, and how it routes its own topic ----


def test_a_worker_reads_its_own_topic_and_the_extra_ones() -> None:
    """Per-participant: its own topic first, then the extra ones (deduplicated, never its own
    twice); single: the commands topic only, whatever the extra ones say."""
    s = Settings(
        command_topics="per-participant",
        extra_command_topics=["team.alpha", "saga-commands.alpha", "team.alpha"],
    )
    assert command_topics(s, "alpha") == ["saga-commands.alpha", "team.alpha"]
    assert command_topics(SINGLE, "alpha") == ["saga-commands"]
    assert dedicated(s, "alpha", "saga-commands.alpha")
    assert not dedicated(s, "alpha", "team.alpha")  # an extra topic may be shared
    assert not dedicated(SINGLE, "alpha", "saga-commands")


def _route(value: bytes | None, headers: list[tuple[str, bytes]], own: bool) -> object:
    return route(value, headers, "alpha", 1_000_000, own)


def test_its_own_topic_dead_letters_what_is_not_its_command() -> None:
    """On its own topic nobody else would ever see a stray record, so the worker dead-letters
    it (on a shared topic it skips it, as before): undecodable, not a command, or another
    participant's by header or by body."""
    mine = command("s-1", "alpha", "DoA", "a")
    other = command("s-1", "beta", "DoB", "b")
    value = codec.encode(mine, "json")
    assert isinstance(_route(value, command_headers(mine), own=True), Deliver)
    cases = {
        "undecodable, no headers": (b"{not json", []),
        "a start, typed without headers": (
            b'{"sagaId":"s-1","command":"StartSaga","sagaType":"t","data":{}}',
            [],
        ),
        "another type by header": (value, [(H_MESSAGE_TYPE, b"StartOrder")]),
        "another participant by header": (codec.encode(other, "json"), command_headers(other)),
        "another participant in the body": (
            codec.encode(other, "json"),
            [(H_MESSAGE_TYPE, b"SagaCommand"), (H_PARTICIPANT, b"alpha")],
        ),
        "another participant in the body, no headers": (codec.encode(other, "json"), []),
    }
    for what, (v, h) in cases.items():
        own = _route(v, h, own=True)
        assert isinstance(own, DeadLetter), (what, own)
        assert isinstance(_route(v, h, own=False), Skip | DeadLetter), what
    # on a shared topic, records that are someone else's business are skipped, not dead-lettered
    assert isinstance(_route(b"{not json", [], own=False), Skip)
    assert isinstance(_route(codec.encode(other, "json"), command_headers(other), False), Skip)


# ---- scripts/stack_topics.py ----


def test_stack_topics_adds_the_samples_participant_topics() -> None:
    """With the commands topic among the names, the samples' per-participant topics come too
    (whatever the mode, so a switch needs no new topics); without it, only the names."""
    names = with_participant_topics(SINGLE, ["saga-commands", "saga-events"])
    assert names[:2] == ["saga-commands", "saga-events"]
    assert {"saga-commands.payment", "saga-commands.inventory", "saga-commands.hotel"} <= set(names)
    assert with_participant_topics(SINGLE, ["saga-events"]) == ["saga-events"]


# ---- start-up: Kafka away is waited out ----


async def test_kafka_away_at_start_is_waited_out_until_a_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Creating the topics when nothing answers on the bootstrap address is retried with
    backoff (an outage never ends the daemon), and a stop meanwhile ends the wait cleanly."""
    attempts: list[str] = []
    real = topics.ensure

    def ensure(settings: Settings, names: list[str], timeout_s: float = 30.0) -> list[str]:
        attempts.append("try")
        return real(settings, names, timeout_s=0.5)  # the real client, a short deadline

    monkeypatch.setattr(topics, "ensure", ensure)
    s = OrchestratorSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        command_topics="per-participant",
        infra_backoff_max_s=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.ensure_topics(["saga-commands.alpha"], s, stop))
    await wait_for(_async(lambda: len(attempts) >= 2), 60, "two attempts")
    assert not task.done()
    stop.set()
    assert await asyncio.wait_for(task, 60) is False


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()

    return predicate


def test_doctor_reports_missing_command_topics_without_failing() -> None:
    """`saga doctor` names the participant topics not created yet and who creates them; it
    does not fail for them (the orchestrator creates them at start); nothing in single mode."""
    samples = ["saga-commands.inventory", "saga-commands.payment"]
    rows = topics.doctor_rows(PER, ["saga-commands", *samples])
    assert [(name, ok) for name, ok, _ in rows] == [("kafka command topics", True)]
    text = rows[0][2]
    assert text.startswith("not created yet: saga-commands.notification, saga-commands.shipping")
    assert "`saga orchestrator run` creates them" in text
    every = topics.expected(PER)
    assert topics.doctor_rows(PER, every)[0][2] == f"per-participant: {', '.join(every)}"
    assert topics.doctor_rows(SINGLE, []) == []
