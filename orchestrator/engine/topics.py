"""Where participant commands go: per-participant topics, or the one commands topic.

`SAGA_COMMAND_TOPICS=per-participant` (the default): the command for participant P goes to
`<commands_topic>.<P>` (`Settings.command_topic_of`), or to its step's own `topic`
(`StepDef.topic`); P's workers read only that topic, and the orchestrator, which reads
`commands_topic` for starts, never fetches a command it sent.
`single`: every command goes to `commands_topic`, which the orchestrator and every worker read
and mostly skip (the README's "Command topics" has the measurements behind the default).

A step's own topic travels with its command as the `saga-command-topic` header, so that a
command a crash left in the outbox is re-published by the relay (which has no definitions) to
the same topic as the original. A command without the header goes where the current mode
sends its participant's commands.

At start-up (`orchestrator.runner`) the topics of every loaded saga definition are created when
missing, like the commands topic (its partition count, replication and message size limit);
`saga doctor` names the missing ones; `scripts/stack_topics.py` creates the samples'.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.core.definition import Registry, SagaDefinition
from orchestrator.errors import ConfigError
from schemas.config import Settings, check_topic_name
from schemas.dlq import Headers, header
from schemas.headers import H_PARTICIPANT

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient


class KafkaUnavailable(Exception):
    """Kafka did not answer (or answered "try again"): the caller retries with backoff."""


#: a step's own topic (`StepDef.topic`), on its commands and their outbox entries
H_COMMAND_TOPIC = "saga-command-topic"
#: topic settings copied from the commands topic onto the ones created here
COPIED_CONFIGS = ("max.message.bytes", "retention.ms", "min.insync.replicas")


def of_headers(settings: Settings, headers: Headers) -> str:
    """The topic of a command record (or outbox entry) by its headers, in the current mode."""
    if settings.command_topics == "single":
        return settings.commands_topic
    own = header(headers, H_COMMAND_TOPIC)
    if own:
        return own
    participant = header(headers, H_PARTICIPANT)
    return settings.command_topic_of(participant) if participant else settings.commands_topic


def participant_topics(settings: Settings, definitions: Iterable[SagaDefinition]) -> list[str]:
    """Every topic the definitions' commands go to in per-participant mode (none in single
    mode), checked: a legal Kafka name, and not one of the saga topics (the orchestrator
    would read a command as an input, or a worker the replies)."""
    if settings.command_topics == "single":
        return []
    reserved = {
        settings.commands_topic: "SAGA_COMMANDS_TOPIC (the starts)",
        settings.events_topic: "SAGA_EVENTS_TOPIC",
        settings.dlq_topic: "SAGA_DLQ_TOPIC",
    }
    out: dict[str, None] = {}
    for d in definitions:
        for step in d.steps:
            if step.is_wait:
                continue
            where = f"saga {d.name!r} version {d.version}, step {step.name!r}"
            name = step.topic or settings.command_topic_of(step.participant)
            what = f"{where}: topic" if step.topic else f"{where}: participant topic"
            try:
                check_topic_name(name, what)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if name in reserved:
                raise ConfigError(
                    f"{what} {name!r} is {reserved[name]}; a step's commands need a topic of "
                    "their own (or SAGA_COMMAND_TOPICS=single for one commands topic)"
                )
            out[name] = None
    return sorted(out)


def registry_topics(settings: Settings, registry: Registry) -> list[str]:
    """`participant_topics` of every registered definition, older versions included (their
    in-flight sagas still send commands)."""
    return participant_topics(settings, registry.all_versions())


def ensure(settings: Settings, names: list[str], timeout_s: float = 30.0) -> list[str]:
    """Create the topics of `names` that are missing, with the commands topic's partition
    count, replication factor and limits; one line of report per topic created. Blocking
    (confluent-kafka's admin client): the runner calls it in a thread. A topic that may
    not be created (no CREATE permission, a policy) or a missing commands topic is a
    `ConfigError` saying what to do; Kafka away is `KafkaUnavailable` (to be retried)."""
    if not names:
        return []
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.cimpl import NewTopic

    from infra import kafka

    client = kafka.admin(settings, **{"socket.timeout.ms": int(timeout_s * 1000)})
    try:
        existing = client.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot list the Kafka topics: {_text(exc)}") from None
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    base = existing.get(settings.commands_topic)
    if base is None or not base.partitions:
        raise ConfigError(
            f"commands topic {settings.commands_topic!r} does not exist, so the participant "
            f"topics cannot copy its partition count: create it first (`scripts/stack topics`)"
        )
    partitions = len(base.partitions)
    replicas = len(next(iter(base.partitions.values())).replicas)
    config = _copied_config(client, settings.commands_topic, timeout_s)
    futures = client.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=replicas, config=config)
         for n in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )  # fmt: skip
    lines: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s * 2)
            lines.append(f"topic {name}: created, {partitions} partitions, {replicas} replicas")
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another copy created it meanwhile
            if isinstance(err, KafkaError) and (err.retriable() or err.code() in _AWAY):
                raise KafkaUnavailable(f"creating topic {name!r}: {_text(exc)}") from None
            raise ConfigError(
                f"cannot create command topic {name!r} ({partitions} partitions, {replicas} "
                f"replicas, like {settings.commands_topic}): {_text(exc)}. Create it, or grant "
                "this user CREATE on it, or run with SAGA_COMMAND_TOPICS=single"
            ) from None
    # a worker that subscribed before the topic existed gets its partitions only once
    # the leaders are known
    kafka._wait_for_leaders(client, missing, timeout_s * 2)
    return lines


def doctor_rows(settings: Settings, have: Iterable[str]) -> list[tuple[str, bool, str]]:
    """`saga doctor`'s row about the command topics (none in single mode). A missing one is
    reported, not failed: the orchestrator creates them when it starts, and says so plainly
    when it may not."""
    names = expected(settings)
    if not names:
        return []
    present = set(have)
    missing = [n for n in names if n not in present]
    if not missing:
        return [("kafka command topics", True, f"per-participant: {', '.join(names)}")]
    return [
        (
            "kafka command topics",
            True,
            f"not created yet: {', '.join(missing)} (`saga orchestrator run` creates them, "
            "which needs CREATE on them; or `scripts/stack_topics.py`)",
        )
    ]


def expected(settings: Settings) -> list[str]:
    """For `saga doctor`: the command topics of the saga modules the settings name (the
    shipped samples' for settings without `saga_modules`); none when they cannot load (the
    orchestrator says why when it starts)."""
    from orchestrator.config import DEFAULT_SAGA_MODULES
    from orchestrator.engine.sagas import load_registry

    modules = getattr(settings, "saga_modules", list(DEFAULT_SAGA_MODULES))
    try:
        return registry_topics(settings, load_registry(modules))
    except ConfigError:
        return []


def _copied_config(client: AdminClient, topic: str, timeout_s: float) -> dict[str, str]:
    """The commands topic's own settings that matter for commands (a command the commands
    topic takes must fit the participant's topic too); {} when they cannot be read (then the
    broker's defaults apply, as for a topic a person creates)."""
    from confluent_kafka.admin._config import ConfigResource
    from confluent_kafka.admin._resource import ResourceType

    try:
        futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        entries = next(iter(futures.values())).result(timeout=timeout_s)
    except Exception:  # e.g. no DESCRIBE_CONFIGS permission: not a reason to refuse to start
        return {}
    return {
        k: e.value
        for k, e in entries.items()
        if k in COPIED_CONFIGS and e.value is not None and not e.is_default
    }


def _away_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset(
        (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
         KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_CONTROLLER)
    )  # fmt: skip


_AWAY = _away_codes()


def _text(exc: Exception) -> str:
    err = exc.args[0] if exc.args else exc
    return str(err.str() if hasattr(err, "str") else err)
