"""A fetched batch's records -> the inputs the engine steps on, and the poison it dead-letters.

Our own commands to participants may share the commands topic with the starts (single-topic
mode): they are not inputs and are skipped. A record that does not decode, a start of a saga
type nobody registered, or a start mapping (user code) that raises is poison with its reason;
nothing here blocks the partition. In registry mode the schema ids first seen in this batch are
fetched first (in a thread; a registry outage is waited out, so the batch waits and nothing is
dead-lettered); an id the registry lacks is poison.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from infra.rdkafka import Record
from orchestrator.config import OrchestratorSettings
from orchestrator.core.model import Event, Start
from orchestrator.engine.publish import Poison
from orchestrator.engine.sagas import StartMapper
from orchestrator.engine.translate import UnknownStart, to_event
from orchestrator.telemetry.tracing import start_traceparent
from schemas import codec
from schemas.avro import Retry, fetch_unknown_schemas
from schemas.codec import DecodeError
from schemas.dlq import header
from schemas.headers import H_MESSAGE_TYPE, H_TRACEPARENT
from schemas.messages import Envelope

log = logging.getLogger("orchestrator")


@dataclass
class Input:
    record: Record
    message: Envelope
    event: Event
    #: ops: when the saga last changed before this input (step latency, tracing spans)
    prev_updated_ms: int = 0


async def decode_batch(
    records: list[Record],
    s: OrchestratorSettings,
    starts: dict[type[Envelope], StartMapper],
    retrying: Retry,
) -> tuple[list[Input], list[Poison]]:
    """Inputs and poison, in record order."""
    ours = [
        r
        for r in records
        if r.topic != s.commands_topic or header(r.headers, H_MESSAGE_TYPE) != "SagaCommand"
    ]
    await fetch_unknown_schemas((r.value for r in ours), retrying)
    inputs: list[Input] = []
    poison: list[Poison] = []
    for r in ours:
        try:
            msg = codec.decode(r.value, s.max_message_bytes)
        except DecodeError as exc:
            poison.append(Poison(r, exc.kind, exc.reason))
            continue
        try:
            event = to_event(msg, starts)
        except UnknownStart as exc:
            poison.append(Poison(r, "unknown_saga_type", str(exc)))
            continue
        except Exception as exc:  # a saga module's start mapping is user code: never block
            log.exception("start mapping failed for %s", type(msg).__name__)
            poison.append(Poison(r, type(exc).__name__, str(exc)[:500]))
            continue
        if isinstance(event, Start):  # ops: the saga's trace: message, header, or new
            tp = start_traceparent(event.traceparent, header(r.headers, H_TRACEPARENT))
            event = replace(event, traceparent=tp)
        if event is not None:
            inputs.append(Input(r, msg, event))
    return inputs, poison
