"""Which records on a commands topic are this participant's, decided from headers first.

Which topics a worker reads (`command_topics`): with per-participant command topics (the
default, `SAGA_COMMAND_TOPICS`), its own `<commands topic>.<name>`, plus any
`SAGA_EXTRA_COMMAND_TOPICS` (steps with a topic of their own); in single mode the commands topic.

Its own topic is DEDICATED: nobody else reads it, so every record there is this participant's
to run or to dead-letter (source `participant:<name>`): undecodable, not a SagaCommand, or
addressed to another participant (by header or body), the record goes to the DLQ, never
silently skipped.

A SHARED topic (the single commands topic, an extra topic) also carries StartOrder records
(often typed by people, with no headers) and commands for the other participants. The rule:

- `saga-participant` names another service: skip, without decoding.
- no `saga-participant`, and `saga-message-type` says something other than SagaCommand: skip.
- `saga-participant` names this service: decode. Undecodable, not a SagaCommand, or addressed to
  another participant in its body: dead-letter (source `participant:<name>`).
- no `saga-participant`: decode; a SagaCommand for this participant is handled, anything else is
  skipped. Undecodable records without the header are NOT dead-lettered here: every participant
  and the orchestrator read this topic, and only the orchestrator dead-letters them, so a bad
  record lands in the DLQ once, not five times.

With a Schema Registry, the schema ids first seen in a batch are fetched before `route` runs
(`schema_values` picks the values it would decode; `BatchProcessor` fetches); a registry outage
makes the batch wait, and an id the registry does not have is undecodable like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.codec import DecodeError, decode
from schemas.config import Settings
from schemas.dlq import Headers, header
from schemas.headers import H_MESSAGE_TYPE, H_PARTICIPANT
from schemas.messages import SagaCommand


@dataclass(frozen=True)
class Skip:
    why: str


@dataclass(frozen=True)
class DeadLetter:
    kind: str
    reason: str


@dataclass(frozen=True)
class Deliver:
    command: SagaCommand


Route = Skip | DeadLetter | Deliver


def command_topics(settings: Settings, participant: str) -> list[str]:
    """The commands topics a worker of `participant` reads, its own first."""
    own = settings.command_topic_of(participant)
    if settings.command_topics == "single":
        return [own]
    return [own, *(t for t in dict.fromkeys(settings.extra_command_topics) if t != own)]


def dedicated(settings: Settings, participant: str, topic: str) -> bool:
    """Whether `topic` is `participant`'s own commands topic, which nobody else reads."""
    return settings.command_topics != "single" and topic == settings.command_topic_of(participant)


def _skip(headers: Headers, participant: str) -> Skip | None:
    """Skip when the headers show the record is not this participant's: no decoding."""
    target = header(headers, H_PARTICIPANT)
    if target is not None and target != participant:
        return Skip("for another participant")
    message_type = header(headers, H_MESSAGE_TYPE)
    if target is None and message_type is not None and message_type != "SagaCommand":
        return Skip(f"a {message_type[:64]}, not a command")
    return None


def schema_values(
    records: Iterable[tuple[bytes | None, Headers]], participant: str
) -> list[bytes | None]:
    """The values `route` would decode: those whose schema ids are worth fetching."""
    return [value for value, headers in records if _skip(headers, participant) is None]


def route(
    value: bytes | None,
    headers: Headers,
    participant: str,
    max_bytes: int,
    own_topic: bool = False,
) -> Route:
    """What to do with one record of a commands topic; `own_topic`: the participant's own
    (`dedicated`), where whatever is not its command is dead-lettered (module docstring)."""
    skip = _skip(headers, participant)
    if skip is not None:
        if not own_topic:
            return skip
        kind = "misaddressed" if header(headers, H_PARTICIPANT) is not None else "wrong_type"
        return DeadLetter(kind, f"{skip.why}, on {participant}'s own commands topic")
    mine = own_topic or header(headers, H_PARTICIPANT) is not None
    try:
        msg = decode(value, max_bytes)
    except DecodeError as exc:
        return (
            DeadLetter(exc.kind, exc.reason)
            if mine
            else Skip("undecodable, left to the orchestrator")
        )
    if not isinstance(msg, SagaCommand):
        if mine:
            return DeadLetter(
                "wrong_type", f"a {type(msg).__name__} addressed to participant {participant}"
            )
        return Skip("not a command")
    if msg.participant != participant:
        if mine:
            return DeadLetter(
                "misaddressed",
                f"addressed to {participant} but the command is for {msg.participant}",
            )
        return Skip("for another participant")
    return Deliver(msg)
