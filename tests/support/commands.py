"""Reading participant commands in whichever command-topic mode the settings are in.

`single`: every command is on `commands_topic`, next to the starts. `per-participant` (the
default, and the suite's): participant P's commands are on `<commands_topic>.P`
(`Settings.command_topic_of`), which the orchestrator creates at start (`topics.ensure`) or a
producer's first send auto-creates. A test reader of "every participant command" does not
know which participants a test's sagas name, and may start before those topics exist, so it
subscribes to the regex `^<commands_topic>\\..+$`. aiokafka matches a pattern against the
topics of each metadata refresh (`NoGroupCoordinator` / `GroupCoordinator`
`_handle_metadata_update`), and refreshes every `metadata_max_age_ms`; a topic's partitions
are read from the start (`auto_offset_reset="earliest"`), so a topic noticed late loses
nothing. Hence the short metadata age here: a topic is picked up within about half a second,
not the 30 s of the product's consumers.

Starts (StartOrder, StartSaga) are on `commands_topic` in both modes."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer

from infra import kafka
from orchestrator.core.definition import SagaDefinition
from orchestrator.engine.topics import participant_topics
from schemas.config import Settings
from tests.support.offsets import end_offsets
from tests.support.sagas_fast import ORDER_FAST

#: how soon a pattern reader notices a command topic created after it started
PATTERN_METADATA_AGE_MS = 500


def per_participant(settings: Settings) -> bool:
    return settings.command_topics != "single"


def pattern(settings: Settings, *also: str) -> str:
    """The regex of every participant command topic of these settings, and of `also`."""
    alternatives = [re.escape(settings.commands_topic) + r"\..+", *map(re.escape, also)]
    return "^(?:" + "|".join(alternatives) + ")$"


@contextlib.asynccontextmanager
async def reading(
    settings: Settings, *also: str, group_id: str | None = None, **overrides: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer of every participant command (from the start of each topic), and of
    the `also` topics; stopped after the block."""
    if not per_participant(settings):
        topics = dict.fromkeys([settings.commands_topic, *also])  # once each, in order
        consumer = kafka.consumer(settings, *topics, group_id=group_id, **overrides)
        async with kafka.started(consumer):
            yield consumer
        return
    options = {"metadata_max_age_ms": PATTERN_METADATA_AGE_MS} | overrides
    consumer = kafka.consumer(settings, group_id=group_id, **options)
    async with kafka.started(consumer):
        # after start: aiokafka's coordinator applies a pattern on each metadata update
        consumer.subscribe(pattern=pattern(settings, *also))
        yield consumer


async def read_commands(
    settings: Settings, expect: int, *also: str, timeout_s: float = 30
) -> list[Any]:
    """Read every participant command (and the `also` topics) from the beginning until
    `expect` records arrived or the deadline passed, as `kafka.read_all` reads one topic."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    big = {"max_partition_fetch_bytes": 20_000_000, "fetch_max_bytes": 50_000_000}
    async with reading(settings, *also, **big) as consumer:
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                out.extend(rs)
    return out


def topics_of(settings: Settings, *definitions: SagaDefinition) -> list[str]:
    """The command topics of the definitions' participants (the order saga's by default), as
    the orchestrator creates them; `[commands_topic]` in single mode."""
    if not per_participant(settings):
        return [settings.commands_topic]
    return participant_topics(settings, definitions or [ORDER_FAST])


async def records_on(settings: Settings, *definitions: SagaDefinition) -> int:
    """How many records the definitions' command topics hold (their end offsets summed; the
    topics must exist). In single mode, the starts on the commands topic count too."""
    return sum((await end_offsets(settings, topics_of(settings, *definitions))).values())
