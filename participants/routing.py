"""Which records on the commands topic are this participant's, decided from headers first.

The commands topic also carries StartOrder records (often typed by people, with no headers) and
commands for the other participants. The rule:

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


def route(value: bytes | None, headers: Headers, participant: str, max_bytes: int) -> Route:
    skip = _skip(headers, participant)
    if skip is not None:
        return skip
    mine = header(headers, H_PARTICIPANT) is not None
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
                f"header addresses {participant} but the command is for {msg.participant}",
            )
        return Skip("for another participant")
    return Deliver(msg)
