"""The suite's reader of participant commands (tests/support/commands.py) in both modes: the
pattern names exactly the participant topics of the test's commands topic, and a reader
started before a participant topic exists still gets what is sent to it. The rest of the
suite relies on both."""

from __future__ import annotations

import re

import pytest

from participants import testing
from schemas.config import Settings
from tests.conftest import BOTH_COMMAND_TOPICS
from tests.support import commands
from tests.support.kafka import produce, wait_for


def test_the_pattern_is_the_participant_topics_of_this_commands_topic_only() -> None:
    s = Settings(commands_topic="a.b-commands", events_topic="ev", command_topics="per-participant")
    rx = re.compile(commands.pattern(s, "ev"))
    for name in ("a.b-commands.inventory", "a.b-commands.x.y", "ev"):
        assert rx.match(name), name
    # the starts, another test's topics, a dot in the name matching any character, a prefix
    for name in ("a.b-commands", "aXb-commands.inventory", "a.b-commands2.x", "a.b-commands."):
        assert not rx.match(name), name
    assert not rx.match("ev2") and not rx.match("xev")


def test_topics_of_follow_the_mode() -> None:
    per = Settings(commands_topic="c", command_topics="per-participant")
    single = per.model_copy(update={"command_topics": "single"})
    assert commands.topics_of(per) == ["c.inventory", "c.notification", "c.payment", "c.shipping"]
    assert commands.topics_of(single) == ["c"]


@BOTH_COMMAND_TOPICS
async def test_a_reader_started_first_gets_commands_on_topics_made_later(
    settings: Settings,
) -> None:
    """The reader starts before any participant topic exists; commands for two participants
    (each topic auto-created by its first send in per-participant mode) and a start arrive;
    it reads both commands, and the start only when asked to read the commands topic too."""
    cmds = [
        testing.command("rc-1", "inventory", "ReserveItems", "reserve_inventory"),
        testing.command("rc-2", "payment", "ProcessPayment", "process_payment"),
    ]
    start = (b"rc-3", b'{"sagaId": "rc-3", "command": "StartOrder"}')
    got: list[bytes] = []
    async with commands.reading(settings) as consumer:
        await testing.produce(settings, cmds)
        await produce(settings, settings.commands_topic, [start])

        async def both() -> bool:
            for rs in (await consumer.getmany(timeout_ms=100)).values():
                got.extend(r.value for r in rs)
            return sum(b"SagaCommand" in v for v in got) == 2

        await wait_for(both, 60, "the reader to get both commands")
    with_starts = await commands.read_commands(settings, 3, settings.commands_topic)
    assert sorted(r.key for r in with_starts) == [b"rc-1", b"rc-2", b"rc-3"]
    if commands.per_participant(settings):
        assert start[1] not in got  # not a participant command: not on their topics
        assert {r.topic for r in with_starts} == {
            settings.commands_topic,
            f"{settings.commands_topic}.inventory",
            f"{settings.commands_topic}.payment",
        }
    else:
        assert {r.topic for r in with_starts} == {settings.commands_topic}


@pytest.mark.parametrize("command_topics", ["single"], indirect=True)
def test_single_mode_can_be_asked_for(settings: Settings) -> None:
    assert settings.command_topics == "single"
    assert commands.topics_of(settings) == [settings.commands_topic]
